//! The public artifact contract: what each stage writes under `artifacts/<stage>/<fingerprint>/`, one module
//! per artifact. Each module owns its file names, its Arrow schemas, its row types and their Parquet reader and
//! writer; stages write through it, and everything else (`report`, `query`, `exp`, `serve`, the torch train
//! stage, the executors, the tests) reads through it. These files are a public interface: polars, pandas and
//! duckdb read them as they are.
//!
//! [`StageId`] is the closed list of stages, which is also the list of artifact folders.

pub mod chunks;
pub mod dataset;
pub mod eval;
pub mod export;
pub mod index;
pub mod pairs;
pub mod synthetic;
pub mod train;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A stage of the pipeline, and so the folder `artifacts/<stage>/` of its outputs. In pipeline order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageId {
    Ingest,
    Chunk,
    Generate,
    Mine,
    Train,
    Export,
    Index,
    Eval,
}

impl StageId {
    /// Every stage, in pipeline order.
    pub const ALL: [StageId; 8] = [
        StageId::Ingest,
        StageId::Chunk,
        StageId::Generate,
        StageId::Mine,
        StageId::Train,
        StageId::Export,
        StageId::Index,
        StageId::Eval,
    ];

    /// The stage's name: its folder under `artifacts/`, and what the CLI accepts.
    pub const fn as_str(self) -> &'static str {
        match self {
            StageId::Ingest => "ingest",
            StageId::Chunk => "chunk",
            StageId::Generate => "generate",
            StageId::Mine => "mine",
            StageId::Train => "train",
            StageId::Export => "export",
            StageId::Index => "index",
            StageId::Eval => "eval",
        }
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StageId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        StageId::ALL.into_iter().find(|id| id.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = StageId::ALL.iter().map(|id| id.as_str()).collect();
            format!("unknown stage {s:?} (stages: {})", names.join(", "))
        })
    }
}

impl crate::engine::StageKey for StageId {
    fn as_str(self) -> &'static str {
        StageId::as_str(self)
    }
}

/// A query's split, as the dataset's qrels file names it (`train`, `dev`, `test`) or as the mine stage assigns it
/// (`val`, carved out of `train` for validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Dev,
    Test,
}

impl Split {
    pub const ALL: [Split; 4] = [Split::Train, Split::Val, Split::Dev, Split::Test];

    pub const fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }

    /// Whether early stopping, the guard and everything tuned on validation use it (`val` or `dev`).
    pub fn is_validation(self) -> bool {
        matches!(self, Split::Val | Split::Dev)
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| format!("expected \"train\", \"val\", \"dev\" or \"test\", got {s:?}"))
    }
}

/// Parse a split column's value, with the file, the row and the field in the error.
pub(crate) fn split_at(path: &std::path::Path, row: usize, value: &str) -> crate::error::Result<Split> {
    value.parse().map_err(|e: String| crate::error::Error::data(path, format!("row {}.split", row + 1), e))
}

impl crate::engine::PipelineConfig for crate::settings::Settings {
    type Id = StageId;
}
