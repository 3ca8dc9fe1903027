//! coltrast: a content-hashed pipeline that fine-tunes a sentence encoder with ColTrast (contrastive loss on
//! pooled embeddings plus ColBERT-style late interaction) and serves retrieval over FAISS.
//!
//! Layout: [`settings`] resolves pipeline.toml once; [`engine`] runs the closed list of [`stages`] with
//! content-hashed caching; [`app`] holds what the CLI commands do, so `main` only parses arguments.
//! Native engines sit behind narrow seams: [`encoder`] (tch) for chunking, mining and training, [`onnx`]
//! (ONNX graph export written in Rust) and [`embed`] (ort) for indexing and queries.
//! [`onnx`] exports the trained model to ONNX and [`embed`] (ONNX Runtime) embeds for index and queries.
//! [`train`] holds the ColTrast model, loss and training loop.

pub mod app;
pub mod embed;
pub mod embed_cache;
pub mod encoder;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod onnx;
pub mod progress;
pub mod settings;
pub mod stages;
pub mod table;
pub mod text;
pub mod train;

pub use error::{Error, Result};
