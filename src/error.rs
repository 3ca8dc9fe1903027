//! One error type for the library. Every variant carries where it happened: the file, the record and the
//! field for data, the file and key for settings, the path for I/O. The binary prints the chain on one line
//! and maps [`Error::exit_code`] to the process exit status (1: the user can fix it, 2: a bug or the system).

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record in an input file is wrong: `data/x.json: projects[2].qa_pairs[0]: missing field "question"`.
    #[error("{}: {record}: {message}", path.display())]
    Data { path: PathBuf, record: String, message: String },

    /// A setting is wrong: `pipeline.toml: chunk.similarity_threshold: expected a float in [-1, 1], got 3`.
    #[error("{source_name}: {key}: {message}")]
    Config { source_name: String, key: String, message: String },

    /// An artifact on disk is not what its manifest says (tampered, truncated, unreadable).
    #[error("{}: corrupt artifact: {message} (delete it or rerun with --force {stage})", path.display())]
    Corrupt { path: PathBuf, stage: String, message: String },

    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Something the user asked for does not exist or cannot be done (unknown stage, missing model, ...).
    #[error("{0}")]
    Usage(String),

    /// Another run holds the artifacts lock and we were told not to wait.
    #[error("{}: locked by another coltrast run (pid {holder}); retry later or drop --no-wait", path.display())]
    Locked { path: PathBuf, holder: String },

    /// A bug or an engine failure; not the user's fault.
    #[error("internal error: {0}")]
    Internal(String),

    /// Sharded embedding failed on its executor (a shard that failed for good on Ray, the driver died, ...).
    #[error("{0}")]
    Executor(String),
    /// This process has no libtorch (see [`crate::backend`]); the `coltrast` binary hands such runs over to
    /// `coltrast-torch` before anything is written.
    #[error("{0}")]
    NeedsTorch(String),
}

impl Error {
    pub fn data(path: impl AsRef<Path>, record: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Data { path: path.as_ref().to_path_buf(), record: record.into(), message: message.into() }
    }
    pub fn config(source_name: impl Into<String>, key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { source_name: source_name.into(), key: key.into(), message: message.into() }
    }
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        Error::Internal(msg.to_string())
    }

    /// 1 for errors the user can fix (bad input, bad settings, corrupt artifact, lock held), 2 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Data { .. }
            | Error::Config { .. }
            | Error::Corrupt { .. }
            | Error::Usage(_)
            | Error::Locked { .. } => 1,
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => 1,
            Error::Io { .. } | Error::Internal(_) | Error::NeedsTorch(_) | Error::Executor(_) => 2,
        }
    }
}

/// Attach a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
