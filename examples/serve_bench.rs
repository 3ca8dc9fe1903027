//! Benchmark helper for `make bench` (issue 5): ONNX Runtime embedding throughput and query latency.
//!
//! Every mode embeds with the engine of `COLTRAST_MODEL__ENGINE` / `COLTRAST_MODEL__PRECISION` (default: ONNX
//! Runtime), as the pipeline's settings would.
//!
//! `serve_bench embed CORPUS.jsonl MODEL_DIR OUT.f32 N REPEATS [none|int8] [ONNX_DIR]` — exports MODEL_DIR to ONNX
//! (Rust graph, float32 or with int8 MatMuls; into ONNX_DIR when given, so that another runtime can load the same
//! file, else into a temporary dir), embeds the first N passages as `title + " " + text` with ort, prints a JSON line and writes the vectors
//! (row-major f32, little-endian) so the Python side can compare them with sentence-transformers.
//!
//! `serve_bench latency CORPUS.jsonl QUERIES.jsonl MODEL_DIR SYNTHETIC_N [none,int8]` — per export mode, one process: load model, embed
//! the corpus, build a Flat index (and a second one padded with SYNTHETIC_N random unit vectors), then time
//! 300 single queries (encode + search, k=10) against each; prints p50/p95 as JSON lines.
//!
//! `serve_bench boolq BOOLQ_DIR MODEL_DIR [none|int8]` — the reproduction figure: every BoolQ passage
//! (`title + " " + text`) and question embedded by the export, a Flat index, document-level nDCG@10, R@1 and
//! MRR@10 over qrels.tsv; prints a JSON line (the int8 gate compares it with the float32 line).

use std::io::{BufRead, Write};
use std::time::Instant;

use coltrast::embed::OrtEncoder;
use coltrast::index::VectorIndex;
use coltrast::onnx::{ExportOptions, Quantize};

fn export(model: &str, dir: &std::path::Path, quantize: Option<&String>) -> anyhow::Result<()> {
    let quantize = match quantize.map(|s| s.as_str()) {
        None | Some("none") => Quantize::None,
        Some("int8") => Quantize::Int8,
        Some(other) => anyhow::bail!("quantize: {other:?}, expected none or int8"),
    };
    let opts = ExportOptions { quantize, ..Default::default() };
    coltrast::onnx::export_sentence_model_with(model.as_ref(), &dir.join("model.onnx"), &opts)?;
    Ok(())
}

fn lines(path: &str, n: usize, f: impl Fn(&serde_json::Value) -> String) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(path)?).lines().take(n) {
        out.push(f(&serde_json::from_str(&line?)?));
    }
    Ok(out)
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    // The engine as the settings' environment variables say (the race's OpenVINO rows); the rest: defaults.
    let mut settings = coltrast::settings::Settings::default();
    let setting = |k: &str| std::env::var(k).ok().map(serde_json::Value::String);
    if let Some(v) = setting("COLTRAST_MODEL__ENGINE") {
        settings.model.engine = serde_json::from_value(v)?;
    }
    if let Some(v) = setting("COLTRAST_MODEL__PRECISION") {
        settings.model.precision = serde_json::from_value(v)?;
    }
    let tmp = tempfile::tempdir()?;
    let doc =
        |v: &serde_json::Value| format!("{} {}", v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or(""));
    match a.get(1).map(|s| s.as_str()) {
        Some("embed") => {
            let (corpus, model, out) = (&a[2], &a[3], &a[4]);
            let (n, repeats): (usize, usize) = (a[5].parse()?, a[6].parse()?);
            let onnx_dir = a.get(8).map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
            export(model, &onnx_dir, a.get(7))?;
            let enc = OrtEncoder::from_settings(&onnx_dir, &settings)?;
            let texts = lines(corpus, n, doc)?;
            let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
            enc.embed(&refs[..8.min(refs.len())])?;
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..repeats {
                let t = Instant::now();
                last = Some(enc.embed(&refs)?);
                times.push(t.elapsed().as_secs_f64());
            }
            let e = last.expect("repeats >= 1");
            let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
            for x in &e.data {
                f.write_all(&x.to_le_bytes())?;
            }
            let med = pct(times.clone(), 0.5);
            println!(
                "{}",
                serde_json::json!({"system": "coltrast", "engine": enc.engine(), "computes_in": enc.computes_in(), "quantize": a.get(7).map(|s| s.as_str()).unwrap_or("none"), "passages": refs.len(), "seconds": times, "median_s": med, "per_s": refs.len() as f64 / med})
            );
        }
        Some("latency") => {
            let (corpus, queries, model) = (&a[2], &a[3], &a[4]);
            let synthetic: usize = a[5].parse()?;
            let modes = a.get(6).cloned().unwrap_or_else(|| "none".into());
            let texts = lines(corpus, usize::MAX, doc)?;
            let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
            let qs = lines(queries, 300, |v| v["text"].as_str().unwrap_or("").to_string())?;
            for mode in modes.split(',') {
                let dir = tmp.path().join(mode);
                export(model, &dir, Some(&mode.to_string()))?;
                let t0 = Instant::now();
                let enc = OrtEncoder::from_settings(&dir, &settings)?;
                let load_s = t0.elapsed().as_secs_f64();
                let docs = enc.embed(&refs)?;
                let boolq = VectorIndex::build("Flat", docs.dim, &docs.data, None)?;
                // 100k: the BoolQ vectors plus seeded random unit vectors.
                let mut big = docs.data.clone();
                let mut state = 7u64;
                while big.len() < synthetic * docs.dim {
                    let mut v: Vec<f32> = (0..docs.dim)
                        .map(|_| {
                            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                        })
                        .collect();
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                    v.iter_mut().for_each(|x| *x /= n);
                    big.extend(v);
                }
                let large = VectorIndex::build("Flat", docs.dim, &big, None)?;
                let hnsw = VectorIndex::build("HNSW32", docs.dim, &big, None)?;
                for (name, index) in [("boolq Flat", &boolq), ("100k Flat", &large), ("100k HNSW32", &hnsw)] {
                    let mut lat = Vec::new();
                    for q in &qs {
                        let t = Instant::now();
                        let e = enc.embed(&[q.as_str()])?;
                        let hits = index.search(&e.data, 10)?;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                        anyhow::ensure!(!hits[0].is_empty());
                    }
                    println!(
                        "{}",
                        serde_json::json!({"engine": enc.engine(), "computes_in": enc.computes_in(), "quantize": mode, "index": name, "vectors": index.len(), "queries": lat.len(), "p50_ms": pct(lat.clone(), 0.5), "p95_ms": pct(lat, 0.95), "model_load_s": load_s})
                    );
                }
            }
        }
        Some("boolq") => {
            let (dir, model) = (std::path::Path::new(&a[2]), &a[3]);
            export(model, tmp.path(), a.get(4))?;
            let enc = OrtEncoder::from_settings(tmp.path(), &settings)?;
            let id = |v: &serde_json::Value| v["_id"].as_str().unwrap_or("").to_string();
            let corpus = dir.join("corpus.jsonl").to_string_lossy().to_string();
            let queries = dir.join("queries.jsonl").to_string_lossy().to_string();
            let (doc_ids, texts) = (lines(&corpus, usize::MAX, id)?, lines(&corpus, usize::MAX, doc)?);
            let (q_ids, q_texts) = (
                lines(&queries, usize::MAX, id)?,
                lines(&queries, usize::MAX, |v| v["text"].as_str().unwrap_or("").to_string())?,
            );
            let mut qrels: std::collections::HashMap<String, std::collections::BTreeSet<String>> = Default::default();
            for line in std::fs::read_to_string(dir.join("qrels.tsv"))?.lines().skip(1) {
                let f: Vec<&str> = line.split('\t').collect();
                if f.len() >= 3 && f[2].trim() != "0" {
                    qrels.entry(f[0].to_string()).or_default().insert(f[1].to_string());
                }
            }
            let t = Instant::now();
            let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
            let docs = enc.embed(&refs)?;
            let embed_s = t.elapsed().as_secs_f64();
            let index = VectorIndex::build("Flat", docs.dim, &docs.data, None)?;
            let qrefs: Vec<&str> = q_texts.iter().map(|s| s.as_str()).collect();
            let hits = index.search(&enc.embed(&qrefs)?.data, 10)?;
            let mut sum = [0f64; 5];
            let mut n = 0usize;
            for (qid, h) in q_ids.iter().zip(&hits) {
                let Some(rel) = qrels.get(qid) else { continue };
                let ranked: Vec<String> = h.iter().map(|&(r, _)| doc_ids[r as usize].clone()).collect();
                for (s, v) in sum.iter_mut().zip(coltrast::metrics::QueryMetrics::compute(&ranked, rel).values()) {
                    *s += v;
                }
                n += 1;
            }
            let m = |i: usize| sum[i] / n.max(1) as f64;
            println!(
                "{}",
                serde_json::json!({"engine": enc.engine(), "computes_in": enc.computes_in(), "quantize": a.get(4).map(|s| s.as_str()).unwrap_or("none"), "queries": n, "passages": docs.len(), "ndcg@10": m(4), "recall@1": m(0), "mrr@10": m(3), "embed_s": embed_s})
            );
        }
        _ => anyhow::bail!("usage: serve_bench embed|latency|boolq ..."),
    }
    Ok(())
}
