//! BoolQ retrieval with the base model, reproducing sentence-transformers' reference numbers with coltrast's
//! own pieces: the tch encoder, a Flat inner-product FAISS index ([`coltrast::index`]) and the metrics
//! ([`coltrast::metrics`]) at document level.
//!
//! Reference (`../shared/data/boolq/README.md`: sentence-transformers 6.2.0, all-MiniLM-L6-v2, each passage
//! embedded as `title + " " + text`, exact cosine search): nDCG@10 0.937, Recall@1 0.862, MRR@10 0.917.
//!
//! Ignored by default: embedding the 2,939 passages takes one to two minutes on 2 CPU cores. Run with
//! `cargo test --release --test boolq_retrieval -- --ignored --nocapture`. Skips with a message when
//! `../shared/data/boolq` or the model is absent. The model directory is `$COLTRAST_MODEL_DIR`, else
//! `$COLTRAST_CACHE/models/all-MiniLM-L6-v2`, else `~/.cache/coltrast/models/all-MiniLM-L6-v2`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use coltrast::index::VectorIndex;
use coltrast::metrics::{docs_from_chunks, evaluate};
use coltrast_torch::encoder::Encoder;

const BOOLQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/boolq");

fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COLTRAST_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = match std::env::var_os("COLTRAST_CACHE") {
        Some(cache) => PathBuf::from(cache),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/coltrast"),
    };
    cache.join("models/all-MiniLM-L6-v2")
}

fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}

fn field<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("missing string field {key:?} in {v}"))
}

// Ignored: about 1-2 minutes of CPU encoding; run it explicitly (see the module header).
#[test]
#[ignore]
fn boolq_base_model_matches_sentence_transformers() {
    let data = Path::new(BOOLQ);
    if !data.join("corpus.jsonl").is_file() {
        println!("SKIP boolq_base_model_matches_sentence_transformers: {BOOLQ} is absent");
        return;
    }
    let model = model_dir();
    if !model.join("model.safetensors").is_file() {
        println!("SKIP boolq_base_model_matches_sentence_transformers: no model at {}", model.display());
        return;
    }
    let corpus = jsonl(&data.join("corpus.jsonl"));
    let queries = jsonl(&data.join("queries.jsonl"));
    let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
    let qrels_text = std::fs::read_to_string(data.join("qrels.tsv")).unwrap();
    for line in qrels_text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() >= 3 && cols[2].trim().parse::<f64>().unwrap_or(0.0) > 0.0 {
            qrels.entry(cols[0].to_string()).or_default().insert(cols[1].to_string());
        }
    }
    println!("BoolQ: {} passages, {} queries, {} with qrels", corpus.len(), queries.len(), qrels.len());

    let enc = Encoder::load(&model, tch::Device::Cpu).unwrap();
    let doc_ids: Vec<String> = corpus.iter().map(|d| field(d, "_id").to_string()).collect();
    let passages: Vec<String> = corpus.iter().map(|d| format!("{} {}", field(d, "title"), field(d, "text"))).collect();
    let t = Instant::now();
    let refs: Vec<&str> = passages.iter().map(String::as_str).collect();
    let doc_emb = enc.embed(&refs, 32).unwrap();
    println!("embedded {} passages in {:.1}s", passages.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let questions: Vec<&str> = queries.iter().map(|q| field(q, "text")).collect();
    let q_emb = enc.embed(&questions, 64).unwrap();
    println!("embedded {} questions in {:.1}s", questions.len(), t.elapsed().as_secs_f64());

    let t = Instant::now();
    let index = VectorIndex::build("Flat", doc_emb.dim, &doc_emb.data, None).unwrap();
    let hits = index.search(&q_emb.data, 10).unwrap();
    println!("Flat index + search of {} queries: {:.2}s", questions.len(), t.elapsed().as_secs_f64());

    // Document level: one passage per row here, but go through the chunk → document mapping anyway.
    let ranked: Vec<Vec<String>> = hits
        .iter()
        .map(|h| docs_from_chunks(h, |row| doc_ids.get(row as usize).cloned()).into_iter().map(|d| d.0).collect())
        .collect();
    let empty = HashSet::new();
    let rels: Vec<&HashSet<String>> = queries.iter().map(|q| qrels.get(field(q, "_id")).unwrap_or(&empty)).collect();
    let m = evaluate(ranked.iter().zip(&rels).map(|(r, rel)| (r.as_slice(), *rel)));
    println!("BoolQ base model, Flat IP, document level: {m:?}");
    println!("reference (sentence-transformers): ndcg@10 0.937, recall@1 0.862, recall@10 0.995, mrr@10 0.917");
    assert!((m["ndcg@10"] - 0.937).abs() <= 0.005, "nDCG@10 {}", m["ndcg@10"]);
    assert!((m["recall@1"] - 0.862).abs() <= 0.005, "Recall@1 {}", m["recall@1"]);
    assert!((m["mrr@10"] - 0.917).abs() <= 0.005, "MRR@10 {}", m["mrr@10"]);
    assert!((m["recall@10"] - 0.995).abs() <= 0.005, "Recall@10 {}", m["recall@10"]);
}
