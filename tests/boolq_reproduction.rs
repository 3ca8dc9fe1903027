//! Reproduction check: with `chunk.strategy = "none"` on BoolQ (each document embedded as `title + " " + text`,
//! the BEIR convention), the base model through coltrast's own ONNX export, ONNX Runtime, FAISS and metrics
//! must give sentence-transformers' document-level nDCG@10 0.937 (R@1 0.862, MRR@10 0.917) to ±0.005; the
//! int8 export must stay within 0.005 nDCG@10 of float32.
//! Skips when ../shared (BoolQ) is absent.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use coltrast::artifacts::dataset::Dataset;
use coltrast::metrics::{docs_from_chunks, QueryMetrics};
use coltrast::onnx::{ExportOptions, Quantize};
use coltrast_testkit::*;

/// BoolQ as the ingest stage reads it (kept alive with its project dir).
struct Boolq {
    project: Project,
    ds: Dataset,
}

fn boolq() -> Option<&'static Boolq> {
    static DATA: OnceLock<Option<Boolq>> = OnceLock::new();
    DATA.get_or_init(|| {
        let boolq = shared_dir()?.join("data/boolq");
        let project =
            Project::new(&format!("[ingest]\npath = \"{}\"\n[chunk]\nstrategy = \"none\"\n", boolq.display()));
        project.run(&["run", "ingest"]).ok();
        let ds =
            coltrast::artifacts::dataset::read(&trusted_dirs(&project.path().join("artifacts"), "ingest")[0]).unwrap();
        Some(Boolq { project, ds })
    })
    .as_ref()
}

/// Document-level (nDCG@10, R@1, MRR@10) of the base model exported with `quantize`, through ONNX Runtime,
/// a Flat FAISS index and coltrast's metrics. Each document is embedded as the chunk stage embeds it with
/// strategy "none" (title + " " + text; checked against the stage itself in
/// torch/tests/boolq_reproduction.rs).
fn doc_metrics(b: &Boolq, quantize: Quantize) -> (f64, f64, f64) {
    let ds = &b.ds;
    let texts: Vec<String> = ds.projects.iter().map(|d| format!("{} {}", d.title, d.text)).collect();
    let ids: Vec<&str> = ds.projects.iter().map(|d| d.project_id.as_str()).collect();
    let model = coltrast::settings::cache_dir().join("models/all-MiniLM-L6-v2");
    let onnx = b.project.path().join(format!("onnx-{}", quantize.as_str()));
    let opts = ExportOptions { quantize, ..Default::default() };
    coltrast::onnx::export_sentence_model_with(&model, &onnx.join("model.onnx"), &opts).unwrap();
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
        "BoolQ base via ONNX ({}) / ort / FAISS: nDCG@10 {ndcg:.4}, R@1 {r1:.4}, MRR@10 {mrr:.4} ({} queries)",
        quantize.as_str(),
        ds.qa.len()
    );
    (ndcg, r1, mrr)
}

/// The float32 figures, computed once for both tests.
fn float32_metrics(b: &Boolq) -> (f64, f64, f64) {
    static M: OnceLock<(f64, f64, f64)> = OnceLock::new();
    *M.get_or_init(|| doc_metrics(b, Quantize::None))
}

#[test]
fn boolq_base_model_reproduces_sentence_transformers() {
    let Some(b) = boolq() else {
        eprintln!("skipping: ../shared is absent (BoolQ lives there)");
        return;
    };
    let (ndcg, r1, mrr) = float32_metrics(b);
    assert!((ndcg - 0.937).abs() <= 0.005, "nDCG@10 {ndcg}");
    assert!((r1 - 0.862).abs() <= 0.005, "R@1 {r1}");
    assert!((mrr - 0.917).abs() <= 0.005, "MRR@10 {mrr}");
}

/// The int8 gate: `export.quantize = "int8"` counts only while its BoolQ nDCG@10 stays within 0.005 of
/// float32's.
#[test]
fn int8_export_keeps_boolq_ndcg_within_0_005_of_float32() {
    let Some(b) = boolq() else {
        eprintln!("skipping: ../shared is absent (BoolQ lives there)");
        return;
    };
    let (ndcg8, _, _) = doc_metrics(b, Quantize::Int8);
    let (ndcg, _, _) = float32_metrics(b);
    eprintln!("int8 nDCG@10 {ndcg8:.4} vs float32 {ndcg:.4}: delta {:+.4}", ndcg8 - ndcg);
    assert!((ndcg8 - ndcg).abs() <= 0.005, "int8 nDCG@10 {ndcg8} vs float32 {ndcg}");
}
