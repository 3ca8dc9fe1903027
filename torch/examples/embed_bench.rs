//! Benchmark helper for `make bench`: sentence-embedding throughput of the tch encoder.
//!
//! Splits BoolQ passages (`corpus.jsonl`) into sentences with coltrast's splitter, writes the first N plain
//! sentences to a text file (so the Python baseline embeds exactly the same inputs), then times
//! `Encoder::embed` on them after one warm-up batch and prints one JSON line.
//!
//! `cargo run --release --example embed_bench -- CORPUS.jsonl MODEL_DIR OUT_SENTENCES.txt N BATCH REPEATS`

use std::io::{BufRead, Write};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 7, "usage: embed_bench CORPUS MODEL_DIR OUT N BATCH REPEATS");
    let (corpus, model, out) = (&args[1], &args[2], &args[3]);
    let n: usize = args[4].parse()?;
    let batch: usize = args[5].parse()?;
    let repeats: usize = args[6].parse()?;
    let mut sentences = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(corpus)?).lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let text = v["text"].as_str().unwrap_or_default();
        for s in coltrast::text::split_sentences(text) {
            sentences.push(s.plain);
        }
        if sentences.len() >= n {
            break;
        }
    }
    sentences.truncate(n);
    let mut f = std::io::BufWriter::new(std::fs::File::create(out)?);
    for s in &sentences {
        writeln!(f, "{}", s.replace('\n', " "))?;
    }
    f.flush()?;
    let enc = coltrast_torch::encoder::Encoder::load(std::path::Path::new(model), tch::Device::Cpu)?;
    let refs: Vec<&str> = sentences.iter().map(|s| s.as_str()).collect();
    enc.embed(&refs[..batch.min(refs.len())], batch)?; // warm-up
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let e = enc.embed(&refs, batch)?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(e.len() == refs.len());
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({"system": "coltrast-tch", "sentences": refs.len(), "batch": batch, "seconds": times, "median_s": median, "per_s": refs.len() as f64 / median, "threads": tch::get_num_threads()})
    );
    Ok(())
}
