//! The inference-engine seam: the only place that calls `ort` or `openvino`. Index and query commands embed
//! through [`OrtEncoder`], which runs the exported model on ONNX Runtime or, with `model.engine`, on OpenVINO
//! ([`Engine`]).
//!
//! What: loads a directory written by [`crate::onnx::export_sentence_model`] (`model.onnx`,
//! `tokenizer.json`, `onnx_model.json`), tokenises in parallel (truncating at the model's
//! `max_seq_length`, ignoring any truncation/padding stored in tokenizer.json), sorts texts by length,
//! pads each batch to its longest member and sizes batches by a padded-token budget
//! ([`EncoderOptions::max_batch_tokens`], default 8192).
//!
//! Inputs: the ONNX directory, the path of libonnxruntime.so (`Settings::ort_library_path()`), the number
//! of intra-op threads (0 = one per core). A missing or unloadable library is an [`crate::Error::Usage`]
//! that says to run `make setup`, never a panic.
//!
//! Outputs: [`Embeddings`] (L2-normalised sentence vectors, input order) and [`TokenRows`] (per text, its
//! unpadded, per-token L2-normalised token vectors and ids, [CLS]/[SEP] included). [`parity`] compares
//! the model with reference vectors ([`max_abs_diff`], [`ParityReport`]).
//!
//! Example:
//! ```no_run
//! use coltrast::embed::OrtEncoder;
//! use std::path::Path;
//! let enc = OrtEncoder::load(Path::new("artifacts/export/abc/onnx"), Path::new("/cache/libonnxruntime.so"), 0)?;
//! let e = enc.embed(&["what is coltrast?", "a retrieval tool"])?;
//! assert_eq!(e.len(), 2);
//! let sim: f32 = e.row(0).iter().zip(e.row(1)).map(|(a, b)| a * b).sum();
//! # let _ = sim;
//! # Ok::<(), coltrast::Error>(())
//! ```

pub mod cache;
mod embeddings;
mod encoder;
mod openvino;
pub mod parity;
pub mod runtime;

pub use encoder::{
    cpu_has_native_bf16, cpuinfo_has_native_bf16, plan_batches, Embeddings, EncoderOptions, Engine, OrtEncoder,
    OutputTensor, TokenRows, PAD_SLACK_TOKENS,
};
pub use parity::{cosine, max_abs_diff, ParityCase, ParityReport, PARITY_SENTENCES, PARITY_TOLERANCE};

#[cfg(test)]
mod tests;
