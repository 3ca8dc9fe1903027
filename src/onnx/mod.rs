//! ONNX export of a sentence model (BERT or MPNet + mean pooling + optional Dense + token head), written in Rust.
//!
//! What: reads a sentence-transformers model directory ([`model_dir`]), builds the ONNX graph with
//! hand-declared protobuf messages ([`proto`], [`graph`]) and writes `model.onnx`, the tokenizer files and
//! `onnx_model.json` ([`export`]). No Python, no protoc.
//!
//! Inputs: a model directory: `config.json`, `model.safetensors`, tokenizer files, optional `2_Dense/`,
//! optional `coltrast_token_head.safetensors` + `coltrast.json`.
//!
//! Outputs: an ONNX model with inputs `input_ids`, `attention_mask`, `token_type_ids` (int64
//! `[batch, sequence]`) and outputs `sentence_embedding` `[batch, D]` (L2-normalised) and
//! `token_embeddings` `[batch, sequence, T]` (per-token L2-normalised; without a token head, the
//! normalised last hidden state with T = hidden size). [`crate::embed::OrtEncoder`] runs it.
//!
//! Example:
//! ```no_run
//! use std::path::Path;
//! let info = coltrast::onnx::export_sentence_model(
//!     Path::new("/models/all-MiniLM-L6-v2"),
//!     Path::new("artifacts/export/model.onnx"),
//! )?;
//! assert_eq!(info.embedding_dim, 384);
//! # Ok::<(), coltrast::Error>(())
//! ```

pub mod export;
pub mod graph;
pub mod model_dir;
pub mod proto;
pub mod safetensors;

pub use export::{
    export_sentence_model, export_sentence_model_with, quantize_columns, ExportInfo, ExportOptions, OnnxModelInfo,
    Quantize, TensorSpec, ATTENTION_MASK, INFO_FILE, INPUT_IDS, LAST_HIDDEN_STATE, OPSET, SENTENCE_EMBEDDING,
    TOKEN_EMBEDDINGS, TOKEN_TYPE_IDS,
};
pub use model_dir::{BertConfig, SentenceModel};

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
