//! Errors of the encoder seam. Every I/O or data error names the file it came from.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running the sentence encoder.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The model directory is not there.
    #[error(
        "model directory {path} does not exist (run `make setup`; for all-mpnet-base-v2, \
         `make setup MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\"`; or pass a local model directory)"
    )]
    MissingModelDir { path: PathBuf },

    /// The model was named like a Hugging Face hub id, which cannot be fetched here.
    #[error(
        "model {id:?} is not a local directory, and coltrast does not download models: \
         run `make setup` (it installs sentence-transformers/all-MiniLM-L6-v2 under the cache, and \
         all-mpnet-base-v2 with MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\"; name it by model.base = \
         \"all-mpnet-base-v2\") \
         or pass a local directory holding config.json, model.safetensors and tokenizer.json"
    )]
    NotDownloadable { id: String },

    /// A file the model needs is missing from the model directory.
    #[error("{path}: missing {what} (the model directory is incomplete; run `make setup`)")]
    MissingFile { path: PathBuf, what: &'static str },

    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (config.json, sentence_bert_config.json, ...) is malformed or has a bad field.
    #[error("{path}: {field}: {message}")]
    Config { path: PathBuf, field: String, message: String },

    /// The model needs a behaviour this encoder does not implement (e.g. CLS pooling, a Dense head).
    #[error("{path}: unsupported: {message}")]
    Unsupported { path: PathBuf, message: String },

    /// tokenizer.json could not be loaded or configured.
    #[error("{path}: cannot load tokenizer: {source}")]
    TokenizerLoad {
        path: PathBuf,
        #[source]
        source: tokenizers::Error,
    },

    /// Tokenising input text failed.
    #[error("tokenisation failed: {source}")]
    Tokenize {
        #[source]
        source: tokenizers::Error,
    },

    /// The weights file could not be read, or lacks a tensor the model needs, or has a wrong shape.
    #[error("{path}: cannot load weights: {source}")]
    Weights {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },

    /// A caller passed an invalid argument (e.g. batch size 0).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An error raised by libtorch while running the model.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}
