//! `coltrast worker embed`: one shard in, one output file out, with the ONNX Runtime encoder (no libtorch).
//!
//! What: reads the shard file (checking each text against its hash), embeds the texts in groups of 256 as the
//! index stage does ([`embed_texts`]), converts token vectors to f16 as the token cache stores them and writes
//! the output atomically. The same shard with the same model and thread count gives the same file. Prints one
//! JSON line of timings (`texts`, `load_s`, `embed_s`, `write_s`) on stdout for the Ray driver.
//!
//! A worker whose parent (the Ray worker process that started it) dies exits within a fifth of a second, so a
//! killed task leaves no orphan computing a shard that Ray has already handed to another worker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::embed::cache::key;
use crate::embed::OrtEncoder;
use crate::error::{Error, Result};

use super::shard;

/// Texts per `embed_both` call, as the index stage has always grouped them.
pub const GROUP: usize = 256;

/// Sentence embeddings (flat) and token vectors (f32) of `texts`, in groups of [`GROUP`]; `progress` is told
/// how many texts each group finished.
pub fn embed_texts(
    enc: &OrtEncoder,
    texts: &[&str],
    mut progress: impl FnMut(usize),
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let mut flat = Vec::with_capacity(texts.len() * enc.dim());
    let mut tokens = Vec::with_capacity(texts.len());
    for group in texts.chunks(GROUP) {
        let (e, toks) = enc.embed_both(group)?;
        flat.extend_from_slice(&e.data);
        tokens.extend(toks.into_iter().map(|r| r.data));
        progress(group.len());
    }
    Ok((flat, tokens))
}

/// Arguments of `coltrast worker embed`.
#[derive(Debug, Clone)]
pub struct EmbedArgs {
    /// The exported model's dir (model.onnx, tokenizer.json, onnx_model.json).
    pub model: PathBuf,
    pub shard: PathBuf,
    pub output: PathBuf,
    /// ONNX Runtime intra-op threads (0 = one per core).
    pub threads: usize,
    pub ort_library: PathBuf,
    /// The engine, resolved on this worker's CPU (`model.engine`).
    pub engine: crate::embed::Engine,
}

/// Run one shard; returns the JSON line of timings.
pub fn run(args: &EmbedArgs) -> Result<serde_json::Value> {
    exit_with_parent();
    let t0 = Instant::now();
    let texts = shard::read_texts(&args.shard)?;
    let opts =
        crate::embed::EncoderOptions { intra_threads: args.threads, engine: args.engine.clone(), ..Default::default() };
    let enc = OrtEncoder::load_with(&args.model, &args.ort_library, opts)?;
    let load_s = t0.elapsed().as_secs_f64();
    test_pause(&args.shard);
    let t1 = Instant::now();
    let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    let (embeddings, tokens) = embed_texts(&enc, &refs, |_| ())?;
    let embed_s = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let out = shard::Output {
        dim: enc.dim(),
        keys: refs.iter().map(|t| key(t)).collect(),
        embeddings,
        tokens: tokens.iter().map(|t| t.iter().map(|x| half::f16::from_f32(*x).to_bits()).collect()).collect(),
    };
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    shard::write_output(&args.output, &out, enc.token_dim())?;
    Ok(serde_json::json!({
        "texts": texts.len(), "load_s": load_s, "embed_s": embed_s, "write_s": t2.elapsed().as_secs_f64(),
    }))
}

/// Exit when the parent process is gone (reparenting changes our parent id).
fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        if std::os::unix::process::parent_id() != parent {
            eprintln!("coltrast worker: parent process {parent} is gone; stopping");
            std::process::exit(3);
        }
    });
}

/// A test hook: with `COLTRAST_TEST_WORKER_PAUSE=<dir>`, the first worker to create `<dir>/paused` (writing
/// "<pid> <shard file>" into it) stops here, mid-shard, until it is killed; every other worker (and a retry of
/// the paused shard) goes on. Lets tests kill a worker, or the whole run, while a shard is in flight.
fn test_pause(shard: &std::path::Path) {
    let Some(dir) = std::env::var_os("COLTRAST_TEST_WORKER_PAUSE").map(PathBuf::from) else { return };
    let marker = dir.join("paused");
    let created = std::fs::OpenOptions::new().write(true).create_new(true).open(&marker);
    if let Ok(mut f) = created {
        use std::io::Write;
        let _ = writeln!(f, "{} {}", std::process::id(), shard.display());
        let _ = f.sync_all();
        eprintln!("coltrast worker: test pause in {}", shard.display());
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
