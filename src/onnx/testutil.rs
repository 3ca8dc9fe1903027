//! Test helpers shared by the onnx and embed tests: locating the installed runtime, base model and
//! fixture (skipping with a message when absent) and writing a tiny random BERT model directory (with the
//! testkit's writer).

use std::path::{Path, PathBuf};

/// libonnxruntime.so as `make setup` installs it, or None (with a message) when absent.
pub fn ort_lib(test: &str) -> Option<PathBuf> {
    let p = crate::settings::Settings::default().ort_library_path();
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no ONNX Runtime library at {} (run `make setup`)", p.display());
        None
    }
}

/// libopenvino_c.so as `make setup` installs it, or None (with a message).
pub fn openvino_lib(test: &str) -> Option<PathBuf> {
    let p = crate::settings::Settings::default().openvino_library_path();
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no OpenVINO runtime at {} (run `make setup`)", p.display());
        None
    }
}

/// The base MiniLM directory as `make setup` installs it, or None (with a message).
pub fn minilm_dir(test: &str) -> Option<PathBuf> {
    let p = crate::settings::cache_dir().join("models").join("all-MiniLM-L6-v2");
    if p.join("model.safetensors").is_file() && p.join("tokenizer.json").is_file() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no base model at {} (run `make setup`)", p.display());
        None
    }
}

/// all-mpnet-base-v2 as `make setup MODELS="all-MiniLM-L6-v2 all-mpnet-base-v2"` installs it, or None (with a
/// message).
pub fn mpnet_dir(test: &str) -> Option<PathBuf> {
    let p = crate::settings::cache_dir().join("models").join("all-mpnet-base-v2");
    if p.join("model.safetensors").is_file() && p.join("tokenizer.json").is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP {test}: no all-mpnet-base-v2 at {} (make setup MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\")",
            p.display()
        );
        None
    }
}

/// The sentence-transformers reference numbers for MiniLM (../shared/fixtures), or None (with a message).
pub fn fixture(test: &str) -> Option<serde_json::Value> {
    fixture_named(test, "minilm_reference.json")
}

/// `../shared/fixtures/<name>`, or None (with a message).
pub fn fixture_named(test: &str, name: &str) -> Option<serde_json::Value> {
    let p = format!("{}/../shared/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    match std::fs::read_to_string(&p) {
        Ok(t) => Some(serde_json::from_str(&t).expect("fixture is JSON")),
        Err(_) => {
            eprintln!("SKIP {test}: fixture {p} is absent");
            None
        }
    }
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub use coltrast_testkit::tiny::Rng;

pub const TINY_HIDDEN: usize = coltrast_testkit::tiny::HIDDEN;
pub const TINY_LAYERS: usize = coltrast_testkit::tiny::LAYERS;
pub const TINY_MAX_SEQ: usize = coltrast_testkit::tiny::WIDE_MAX_SEQ;
pub const TINY_DENSE: usize = coltrast_testkit::tiny::DENSE;
pub const TINY_TOKEN: usize = coltrast_testkit::tiny::TOKEN;

/// The export tests' tiny random BERT ([`TinyModel::wide`](coltrast_testkit::tiny::TinyModel::wide)): wide
/// weights, max_seq_length 24, optionally a Dense head (16) and a token head (8).
pub fn write_tiny_model(dir: &Path, dense: bool, token_head: bool, seed: u64) {
    coltrast_testkit::tiny::TinyModel::wide(dense, token_head, seed).write(dir);
}
