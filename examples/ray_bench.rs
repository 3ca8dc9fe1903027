//! Benchmark helper for `make bench` section `ray` (issue 12): the index stage's embedding path
//! ([`coltrast::executor::prefill`]: plan shards of the cache misses, embed them on the executor, merge them into
//! the caches) on N BoolQ passages, embedded as `chunk.strategy = "none"` embeds them (`title + " " + text`).
//!
//! `ray_bench CORPUS.jsonl MODEL_DIR N ONNX_DIR KEY=VALUE...` — exports MODEL_DIR to ONNX_DIR once (reused when
//! present), opens empty caches in a fresh temp dir (shards go to `executor.shared_dir`), applies the `--set`-style settings (e.g.
//! `executor.kind=ray executor.ray_address=127.0.0.1:6392 executor.shard_texts=256`) and prints one JSON line:
//! seconds, texts, and the executor's manifest stats.

use std::io::BufRead;
use std::time::Instant;

use coltrast::embed::cache::{EmbeddingCache, TokenCache};
use coltrast::embed::OrtEncoder;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() >= 5, "usage: ray_bench CORPUS.jsonl MODEL_DIR N ONNX_DIR [KEY=VALUE...]");
    let n: usize = a[3].parse()?;
    let onnx = std::path::PathBuf::from(&a[4]);
    if !onnx.join("onnx_model.json").is_file() {
        coltrast::onnx::export_sentence_model(a[2].as_ref(), &onnx.join("model.onnx"))?;
    }
    let tmp = tempfile::tempdir()?;
    let sources = coltrast::settings::Sources { config: None, env: vec![], sets: a[5..].to_vec() };
    let s = coltrast::settings::resolve(&sources)?.settings;
    let enc = OrtEncoder::from_settings(&onnx, &s)?;
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(&a[1])?).lines().take(n) {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        texts.push(format!("{} {}", v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or("")));
    }
    let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let cache = tmp.path().join("cache");
    let key = "onnx-bench";
    let mut emb = EmbeddingCache::open(&cache, key, enc.dim())?;
    let mut tok = TokenCache::open(&cache, key, enc.token_dim())?;
    let t = Instant::now();
    let model = coltrast::executor::Model { dir: &onnx, key, encoder: &enc, embeddings: &mut emb, tokens: &mut tok };
    let pre = coltrast::executor::prefill(&s, model, &refs, "bench")?;
    let secs = t.elapsed().as_secs_f64();
    let stats: serde_json::Map<String, serde_json::Value> =
        pre.stats().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let embedded =
        emb.embed(&refs, |m| Err(coltrast::Error::internal(format!("{} texts missing after prefill", m.len()))))?;
    anyhow::ensure!(embedded.len() == refs.len() * enc.dim());
    println!("{}", serde_json::json!({"seconds": secs, "texts": pre.texts, "stats": stats}));
    Ok(())
}
