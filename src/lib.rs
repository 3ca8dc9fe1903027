//! coltrast: a content-hashed pipeline that fine-tunes a sentence encoder with ColTrast (contrastive loss on
//! pooled embeddings plus ColBERT-style late interaction) and serves retrieval over FAISS.
//!
//! Layout: [`settings`] resolves pipeline.toml once; [`engine`] runs the closed list of [`stages`] with
//! content-hashed caching; [`app`] holds what the CLI commands do, so `main` only parses arguments.
//! Native engines sit behind narrow seams: [`backend`] is libtorch's (chunking, mining, training and the
//! export parity check need it; the `coltrast-torch` crate implements it, so this library and the `coltrast`
//! binary do not link libtorch and start in milliseconds); [`onnx`] exports to ONNX (graph written in Rust) and [`embed`]
//! (ONNX Runtime) embeds for index and queries; [`index`] (FAISS) searches vectors. [`late`] stores token
//! embeddings and reranks by MaxSim; [`metrics`] scores ranked lists; [`serve`] is the HTTP server. [`exp`] sweeps settings and compares
//! the recorded experiments.

pub mod app;
pub mod artifacts;
pub mod backend;
pub mod cli;
pub mod embed;
pub mod engine;
pub mod error;
pub mod executor;
pub mod exp;
pub mod fsutil;
pub mod guard;
pub mod hash;
pub mod index;
pub mod late;
pub mod lexical;
pub mod metrics;
pub mod onnx;
pub mod progress;
pub mod query;
pub mod report;
pub mod serve;
pub mod settings;
pub mod stages;
pub mod table;
pub mod text;

pub use error::{Error, Result};
