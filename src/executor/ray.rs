//! `executor.kind = "ray"`: one Ray task per shard, through the Python driver `python/coltrast_ray`.
//!
//! What, in order:
//! 1. The model is copied once to `<shared>/models/<model key>/` (through a temporary dir and a rename), so
//!    every node reads the same bytes.
//! 2. Each shard's texts go to `<shared>/shards/<model key>/<id>.texts.parquet`. A shard whose
//!    `<id>.embeddings.parquet` already exists was finished by an earlier, interrupted run: it is reused.
//! 3. The others are written into a plan (JSON) for `python -m coltrast_ray PLAN` (`executor.python`), which
//!    submits one task per shard (`executor.task_cpus`/`task_gpus`, `max_retries`, spread over the nodes) and
//!    prints a JSON line as each finishes; one progress bar counts them. The driver's stdin stays open while
//!    this process lives: if coltrast is killed, the driver cancels the tasks and exits.
//! 4. A shard that failed after Ray's retries fails the stage with one line naming it and the Ray error, once
//!    the other shards are done (their outputs stay for the rerun).
//! 5. Every output is read back, checked against its shard (hashes, order, dims) and merged into the caches,
//!    which are flushed; then this run's shard files are removed. An output that fails the check is removed
//!    and the stage fails: the rerun embeds that shard again. Temporaries (`.*.tmp`) are never read.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, IoContext, Result};
use crate::settings::Settings;

use super::shard::{self, Shard};
use super::{Model, Prefill};

/// A path as every task sees it: absolute (tasks run in another working directory).
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// `executor.shared_dir`, or `<artifacts>/.cache/shards`, absolute.
pub fn shared_dir(s: &Settings) -> PathBuf {
    absolute(match &s.executor.shared_dir {
        Some(dir) => s.resolve_path(dir),
        None => s.artifacts_path().join(".cache").join("shards"),
    })
}

/// `executor.python`, or the venv of `make setup RAY=1`.
pub fn python(s: &Settings) -> PathBuf {
    match &s.executor.python {
        Some(python) => s.resolve_path(python),
        None => crate::settings::cache_dir().join("ray-venv").join("bin").join("python"),
    }
}

/// `executor.worker_bin`, or the `coltrast` binary next to this executable (never coltrast-torch: the worker
/// must not load libtorch).
pub fn worker_bin(s: &Settings) -> Result<PathBuf> {
    if let Some(bin) = &s.executor.worker_bin {
        return Ok(absolute(s.resolve_path(bin)));
    }
    let exe = std::env::current_exe().map_err(|e| Error::internal(format!("current executable: {e}")))?;
    Ok(exe.with_file_name("coltrast"))
}

/// Copy the model's files to `<shared>/models/<key>/` unless already there.
fn publish_model(shared: &Path, key: &str, dir: &Path) -> Result<PathBuf> {
    let dest = shared.join("models").join(key);
    if dest.join("onnx_model.json").is_file() {
        return Ok(dest);
    }
    let parent = shared.join("models");
    std::fs::create_dir_all(&parent).at(&parent)?;
    let tmp = parent.join(format!(".{key}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).at(&tmp)?;
    for entry in std::fs::read_dir(dir).at(dir)? {
        let p = entry.at(dir)?.path();
        if p.is_file() {
            let to = tmp.join(p.file_name().unwrap_or_default());
            std::fs::copy(&p, &to).at(&to)?;
        }
    }
    crate::fsutil::sync_tree(&tmp)?;
    if std::fs::rename(&tmp, &dest).is_err() {
        // another run published it first
        let _ = std::fs::remove_dir_all(&tmp);
        if !dest.join("onnx_model.json").is_file() {
            return Err(Error::internal(format!("could not publish the model to {}", dest.display())));
        }
    }
    crate::fsutil::sync_dir(&parent);
    Ok(dest)
}

struct ShardFiles {
    texts: PathBuf,
    output: PathBuf,
}

fn files(dir: &Path, sh: &Shard<'_>) -> ShardFiles {
    ShardFiles {
        texts: dir.join(format!("{}.texts.parquet", sh.id)),
        output: dir.join(format!("{}.embeddings.parquet", sh.id)),
    }
}

/// One line of the driver's stdout.
#[derive(Debug, serde::Deserialize)]
struct Report {
    shard: String,
    ok: bool,
    #[serde(default)]
    node: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    load_s: f64,
    #[serde(default)]
    embed_s: f64,
    #[serde(default)]
    attempt_s: f64,
}

pub fn run(s: &Settings, model: Model<'_>, shards: &[Shard<'_>], what: &str) -> Result<Prefill> {
    let mut out = Prefill { kind: "ray", ..Default::default() };
    if shards.is_empty() {
        return Ok(out);
    }
    let shared = shared_dir(s);
    let dir = shared.join("shards").join(model.key);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let mut todo = Vec::new();
    for sh in shards {
        let f = files(&dir, sh);
        if f.output.is_file() {
            out.shards_reused += 1;
            continue;
        }
        if !f.texts.is_file() {
            shard::write_texts(&f.texts, &sh.texts)?;
        }
        todo.push(sh);
    }
    if !todo.is_empty() {
        let model_dir = publish_model(&shared, model.key, model.dir)?;
        submit(s, &model_dir, &dir, &todo, shards.len(), what, &mut out)?;
    }
    // Merge every shard's output, in plan order.
    let merge = std::time::Instant::now();
    let (dim, token_dim) = (model.encoder.dim(), model.encoder.token_dim());
    for sh in shards {
        let f = files(&dir, sh);
        let o = match shard::read_output(&f.output, &sh.texts, dim, token_dim) {
            Ok(o) => o,
            Err(e) => {
                let _ = std::fs::remove_file(&f.output);
                return Err(Error::Executor(format!(
                    "shard {} output is not usable ({e}); it was removed, rerun to embed it again",
                    sh.id
                )));
            }
        };
        for (i, k) in o.keys.iter().enumerate() {
            model.embeddings.insert_key(*k, &o.embeddings[i * dim..(i + 1) * dim])?;
        }
        for (k, t) in o.keys.iter().zip(o.tokens) {
            model.tokens.insert_key_f16(*k, t)?;
        }
    }
    model.embeddings.flush()?;
    model.tokens.flush()?;
    out.merge_s = merge.elapsed().as_secs_f64();
    for sh in shards {
        let f = files(&dir, sh);
        let _ = std::fs::remove_file(&f.texts);
        let _ = std::fs::remove_file(&f.output);
    }
    Ok(out)
}

/// Run the driver over `todo` and wait for it; fills the per-node counts and timings.
fn submit(
    s: &Settings,
    model_dir: &Path,
    dir: &Path,
    todo: &[&Shard<'_>],
    total: usize,
    what: &str,
    out: &mut Prefill,
) -> Result<()> {
    let python = python(s);
    if !python.exists() {
        return Err(Error::Usage(format!(
            "executor.python: {} not found: run `make setup RAY=1` (or set executor.python to a Python with ray \
             2.60.0 and python/coltrast_ray installed)",
            python.display()
        )));
    }
    let bin = worker_bin(s)?;
    let threads = s.executor.task_cpus.ceil().max(1.0) as usize;
    let ort = absolute(s.ort_library_path());
    let env: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("COLTRAST_TEST_") || k == "COLTRAST_LOG" || k == "COLTRAST_CACHE")
        .collect();
    let plan_shards: Vec<serde_json::Value> = todo
        .iter()
        .map(|sh| {
            let f = files(dir, sh);
            let argv: Vec<String> = vec![
                bin.display().to_string(),
                "worker".into(),
                "embed".into(),
                "--model".into(),
                model_dir.display().to_string(),
                "--shard".into(),
                f.texts.display().to_string(),
                "--output".into(),
                f.output.display().to_string(),
                "--threads".into(),
                threads.to_string(),
                "--ort-library".into(),
                ort.display().to_string(),
                // the settings' values: `auto` is resolved on the worker's own CPU
                "--engine".into(),
                s.model.engine.as_str().into(),
                "--precision".into(),
                s.model.precision.as_str().into(),
                "--openvino-library".into(),
                absolute(s.openvino_library_path()).display().to_string(),
            ];
            serde_json::json!({ "id": sh.id, "argv": argv, "texts": sh.texts.len() })
        })
        .collect();
    let plan = serde_json::json!({
        "address": s.executor.ray_address, "num_cpus": s.executor.task_cpus, "num_gpus": s.executor.task_gpus,
        "max_retries": s.executor.max_retries, "env": env, "shards": plan_shards,
    });
    let plan_path = dir.join(format!("plan-{}.json", std::process::id()));
    crate::fsutil::write_atomic(&plan_path, &serde_json::to_vec_pretty(&plan).map_err(Error::internal)?)?;
    tracing::info!(shards = todo.len(), address = %s.executor.ray_address, "submitting shards to Ray");

    let mut child = Command::new(&python)
        .args(["-m", "coltrast_ray"])
        .arg(&plan_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(&python, e))?;
    // Kept open (never written) until the driver is done: its EOF tells the driver that coltrast is gone.
    let stdin = child.stdin.take();
    let mut stderr = child.stderr.take().ok_or_else(|| Error::internal("driver stderr"))?;
    let err_tail = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = stderr.read_to_string(&mut buf);
        buf
    });
    let stdout = child.stdout.take().ok_or_else(|| Error::internal("driver stdout"))?;
    let bar = crate::progress::bar(total as u64, what);
    bar.set_position((total - todo.len()) as u64);
    let mut failed: Option<(String, String)> = None;
    let mut seen = 0usize;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| Error::internal(format!("reading the Ray driver's output: {e}")))?;
        let Ok(r) = serde_json::from_str::<Report>(&line) else {
            tracing::debug!("ray driver: {line}");
            continue;
        };
        seen += 1;
        if r.ok {
            out.shards_embedded += 1;
            *out.per_node.entry(r.node).or_default() += 1;
            out.load_s += r.load_s;
            out.embed_s += r.embed_s;
            out.attempt_s += r.attempt_s;
        } else {
            tracing::warn!(shard = %r.shard, "shard failed: {}", r.error);
            failed.get_or_insert((r.shard, r.error));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(stdin);
    let status = child.wait().map_err(|e| Error::io(&python, e))?;
    let stderr = err_tail.join().unwrap_or_default();
    for l in stderr.lines() {
        tracing::debug!("ray driver: {l}");
    }
    let _ = std::fs::remove_file(&plan_path);
    if let Some((shard, error)) = failed {
        let f = todo.iter().find(|sh| sh.id == shard).map(|sh| files(dir, sh).texts);
        let at = f.map(|p| format!(" ({})", p.display())).unwrap_or_default();
        return Err(Error::Executor(format!("shard {shard}{at} failed on Ray: {error}")));
    }
    if !status.success() || seen < todo.len() {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(Error::Executor(format!(
            "the Ray driver ({} -m coltrast_ray) exited with {status} after {seen} of {} shards: {last}",
            python.display(),
            todo.len()
        )));
    }
    Ok(())
}
