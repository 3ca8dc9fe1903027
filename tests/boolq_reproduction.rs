//! Reproduction check: with `chunk.strategy = "none"` on BoolQ (each document embedded as `title + " " + text`,
//! the BEIR convention), the base model through coltrast's own ONNX export, ONNX Runtime, FAISS and metrics
//! must give sentence-transformers' document-level nDCG@10 0.937 (R@1 0.862, MRR@10 0.917) to ±0.005.
//! Skips when ../shared (BoolQ) is absent.

mod common;

use std::collections::BTreeSet;

use coltrast::metrics::{docs_from_chunks, QueryMetrics};
use common::*;

#[test]
fn boolq_base_model_reproduces_sentence_transformers() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared is absent (BoolQ lives there)");
        return;
    };
    let boolq = shared.join("data/boolq");
    let p = Project::new(&format!("[ingest]\npath = \"{}\"\n[chunk]\nstrategy = \"none\"\n", boolq.display()));
    p.run(&["run", "ingest"]).ok();
    let ds = coltrast::stages::ingest::read(&trusted_dirs(&p.path().join("artifacts"), "ingest")[0]).unwrap();

    // The texts the chunk stage embeds with strategy "none" (title + " " + text; checked against the stage
    // itself on a small BEIR folder in the next test), embedded here by ONNX Runtime only.
    let texts: Vec<String> = ds.projects.iter().map(|d| format!("{} {}", d.title, d.text)).collect();
    let ids: Vec<&str> = ds.projects.iter().map(|d| d.project_id.as_str()).collect();

    let model = coltrast::settings::cache_dir().join("models/all-MiniLM-L6-v2");
    let onnx = p.path().join("onnx");
    coltrast::onnx::export_sentence_model(&model, &onnx.join("model.onnx")).unwrap();
    let s = coltrast::settings::Settings::default();
    let enc = coltrast::embed::OrtEncoder::from_settings(&onnx, &s).unwrap();
    let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    let docs = enc.embed(&refs).unwrap();
    let index = coltrast::index::VectorIndex::build("Flat", docs.dim, &docs.data, None).unwrap();
    let questions: Vec<&str> = ds.qa.iter().map(|q| q.question.as_str()).collect();
    let q = enc.embed(&questions).unwrap();
    let hits = index.search(&q.data, 10).unwrap();
    let mut sum = [0f64; 5];
    for (qa, h) in ds.qa.iter().zip(&hits) {
        let ranked: Vec<String> =
            docs_from_chunks(h, |r| Some(ids[r as usize].to_string())).into_iter().map(|d| d.0).collect();
        let rel: BTreeSet<String> = [qa.project_id.clone()].into();
        for (s, v) in sum.iter_mut().zip(QueryMetrics::compute(&ranked, &rel).values()) {
            *s += v;
        }
    }
    let n = ds.qa.len() as f64;
    let (r1, mrr, ndcg) = (sum[0] / n, sum[3] / n, sum[4] / n);
    eprintln!(
        "BoolQ base via ONNX/ort/FAISS: nDCG@10 {ndcg:.4}, R@1 {r1:.4}, MRR@10 {mrr:.4} ({} queries)",
        ds.qa.len()
    );
    assert!((ndcg - 0.937).abs() <= 0.005, "nDCG@10 {ndcg}");
    assert!((r1 - 0.862).abs() <= 0.005, "R@1 {r1}");
    assert!((mrr - 0.917).abs() <= 0.005, "MRR@10 {mrr}");
}

/// chunk.strategy = "none" keeps each BEIR document whole and embeds exactly `title + " " + text`.
#[test]
fn strategy_none_embeds_title_space_text() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared is absent (BoolQ lives there)");
        return;
    };
    let src = shared.join("data/boolq");
    let p = Project::new("[ingest]\npath = \"beir\"\n[chunk]\nstrategy = \"none\"\n");
    let corpus: Vec<String> =
        std::fs::read_to_string(src.join("corpus.jsonl")).unwrap().lines().take(3).map(String::from).collect();
    p.write("beir/corpus.jsonl", corpus.join("\n"));
    p.write(
        "beir/queries.jsonl",
        "{\"_id\": \"q0\", \"text\": \"does ethanol take more energy make that produces\"}\n",
    );
    p.write("beir/qrels.tsv", "query-id\tcorpus-id\tscore\nq0\tp0\t1\n");
    p.run(&["run", "chunk"]).ok();
    let (chunks, _, _) =
        coltrast::stages::chunk::read_chunks(&trusted_dirs(&p.path().join("artifacts"), "chunk")[0]).unwrap();
    assert_eq!(chunks.len(), 3);
    for (c, line) in chunks.iter().zip(&corpus) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let expected = format!("{} {}", v["title"].as_str().unwrap(), v["text"].as_str().unwrap());
        assert_eq!(c.embed_text, expected);
    }
}
