//! Benchmark helper for `make bench` (issue 5): what the (model hash, text hash) embedding cache saves when
//! one document changes.
//!
//! `reindex_bench CORPUS.jsonl MODEL_DIR N` — exports MODEL_DIR to ONNX, then embeds the first N passages
//! (`title + " " + text`) through the same cached path the index stage uses ([`embed_cached`], sentence and
//! token embeddings), three times: cold (empty cache), after one passage changed, and unchanged. Prints a
//! JSON line per pass with its seconds and how many texts were embedded.

use std::io::BufRead;
use std::time::Instant;

use coltrast::embed::cache::embed_cached;
use coltrast::embed::cache::{EmbeddingCache, TokenCache};
use coltrast::embed::OrtEncoder;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    anyhow::ensure!(a.len() == 4, "usage: reindex_bench CORPUS.jsonl MODEL_DIR N");
    let n: usize = a[3].parse()?;
    let tmp = tempfile::tempdir()?;
    coltrast::onnx::export_sentence_model(a[2].as_ref(), &tmp.path().join("onnx/model.onnx"))?;
    let enc = OrtEncoder::from_settings(&tmp.path().join("onnx"), &coltrast::settings::Settings::default())?;
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(&a[1])?).lines().take(n) {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        texts.push(format!("{} {}", v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or("")));
    }
    let cache = tmp.path().join("cache");
    let run = |pass: &str, texts: &[String]| -> anyhow::Result<()> {
        let mut emb = EmbeddingCache::open(&cache, "bench", enc.dim())?;
        let mut tok = TokenCache::open(&cache, "bench", enc.token_dim())?;
        let before = emb.misses;
        let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        let t = Instant::now();
        embed_cached(&enc, &mut emb, &mut tok, &refs, pass)?;
        emb.flush()?;
        tok.flush()?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{}",
            serde_json::json!({"pass": pass, "passages": texts.len(), "embedded": emb.misses - before, "seconds": secs})
        );
        Ok(())
    };
    run("cold", &texts)?;
    texts[n / 2].push_str(" This passage was edited.");
    run("one passage changed", &texts)?;
    run("unchanged", &texts)?;
    Ok(())
}
