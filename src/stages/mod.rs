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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{ModelEngine, Quantize, TrainDevice};

    fn keys(s: &Settings) -> Vec<(&'static str, toml::Value)> {
        STAGES.iter().map(|st| (st.name(), st.settings(s).unwrap())).collect()
    }

    fn base() -> Settings {
        let mut s = Settings::default();
        s.train.device = TrainDevice::Cpu;
        s
    }

    #[test]
    fn speed_only_settings_stay_out_of_every_cache_key() {
        let before = keys(&base());
        let mut s = base();
        s.chunk.batch_size += 7;
        s.generate.batch_size += 7;
        s.generate.llm_batch += 1;
        s.mine.batch_size += 7;
        s.train.max_memory_mb = 1234;
        s.model.threads = std::num::NonZeroUsize::new(3);
        s.model.engine = ModelEngine::Openvino;
        s.executor.shard_texts = 5;
        assert_eq!(keys(&s), before);
    }

    #[test]
    fn result_settings_change_their_stage_key_and_no_earlier_one() {
        let before = keys(&base());
        let changed = |edit: fn(&mut Settings)| -> Vec<&'static str> {
            let mut s = base();
            edit(&mut s);
            keys(&s).iter().zip(&before).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0).collect()
        };
        assert_eq!(changed(|s| s.chunk.max_tokens += 1), ["chunk"]);
        assert_eq!(changed(|s| s.mine.num_negatives += 1), ["mine"]);
        assert_eq!(changed(|s| s.train.epochs += 1), ["train"]);
        assert_eq!(changed(|s| s.export.quantize = Quantize::Int8), ["export"]);
        assert_eq!(changed(|s| s.index.factory = "HNSW32".into()), ["index"]);
        assert_eq!(changed(|s| s.eval.split = crate::settings::EvalSplit::All), ["eval"]);
        // the guard's margin picks what is served (index) and what eval reports; nothing is exported again
        assert_eq!(changed(|s| s.export.guard_margin += 0.01), ["index", "eval"]);
    }
}
