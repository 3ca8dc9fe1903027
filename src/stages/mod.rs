//! The closed list of stages, in pipeline order: ingest → chunk → generate → mine → train → export → index →
//! eval.
//! Adding one is one visible edit here.

use crate::engine::Stage;
use crate::settings::Settings;

pub mod chunk;
pub mod eval;
pub mod export;
pub mod generate;
pub mod index;
pub mod ingest;
pub mod mine;
pub mod train;

/// Every stage of the pipeline, in order; each one's upstream comes before it.
pub static STAGES: &[&dyn Stage<Settings>] = &[
    &ingest::Ingest,
    &chunk::ChunkStage,
    &generate::Generate,
    &mine::Mine,
    &train::Train,
    &export::Export,
    &index::IndexStage,
    &eval::Eval,
];

/// The stages as a Vec, for [`crate::engine::Pipeline::new`].
pub fn all() -> Vec<&'static dyn Stage<Settings>> {
    STAGES.to_vec()
}
