//! `executor.kind = "ray"` on a real two-node Ray cluster (one CPU each) on this machine, always inside a
//! network namespace this test creates, so Ray binds nothing but that namespace's loopback (see
//! ../shared/TOOLCHAIN.md, "Ray on this machine"). On ai_faq_dev (a small BEIR corpus, each passage one chunk)
//! with the real MiniLM base model, the index stage run on Ray must match a local run: same fingerprint,
//! embeddings to cosine >= 0.99999, the same search results, and a manifest counting shards per node. Then the
//! faults: a Ray worker killed mid-shard is retried and the stage completes; `coltrast run` killed mid-stage
//! loses no finished shard (the rerun embeds only the missing one); a shard that fails for good fails the stage
//! with one line naming it.
//!
//! Skips, saying why, where Ray is not installed (`make setup RAY=1`), without root (network namespaces) or
//! without ../shared. One test function: the cluster and the upstream stages are shared by every check.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coltrast_testkit::*;

const PORT: &str = "6392";
const SHARD_TEXTS: usize = 40;

/// A two-node Ray cluster inside a fresh network namespace; stopped and removed on drop, even on failure.
struct Cluster {
    ns: String,
    venv: PathBuf,
    tmp: tempfile::TempDir,
}

impl Cluster {
    fn start(venv: &Path) -> Cluster {
        let ns = format!("coltrast-ray-{}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &ns]).status().expect("ip");
        assert!(st.success(), "ip netns add {ns} failed");
        // Dropped from here on: stops Ray and deletes the namespace whatever happens next.
        let tmp = tempfile::Builder::new().prefix("ray").tempdir_in("/tmp").unwrap();
        let c = Cluster { ns, venv: venv.to_path_buf(), tmp };
        assert!(c.exec("ip", &["link", "set", "lo", "up"]).status().unwrap().success());
        let temp = format!("--temp-dir={}", c.tmp.path().display());
        let ray = c.venv.join("bin/ray").display().to_string();
        let head = c
            .exec(
                &ray,
                &["start", "--head", &format!("--port={PORT}"), "--num-cpus=1", "--include-dashboard=false", &temp],
            )
            .output()
            .unwrap();
        assert!(head.status.success(), "ray start --head: {}", String::from_utf8_lossy(&head.stderr));
        let node = c.exec(&ray, &["start", &format!("--address=127.0.0.1:{PORT}"), "--num-cpus=1"]).output().unwrap();
        assert!(node.status.success(), "ray start --address: {}", String::from_utf8_lossy(&node.stderr));
        c
    }

    /// `prog args` inside the namespace.
    fn exec(&self, prog: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, prog]).args(args).env("RAY_TMPDIR", self.tmp.path());
        c
    }

    /// `coltrast <args>` inside the namespace, in the project, with the Ray executor.
    fn coltrast(&self, p: &Project, args: &[&str]) -> Command {
        // the coltrast binary (no libtorch; it hands a libtorch stage to coltrast-torch), whose workers Ray runs
        let mut c = self.exec(&coltrast_bin().display().to_string(), args);
        c.current_dir(p.path())
            .env_remove("COLTRAST_LOG")
            .env("COLTRAST_EXECUTOR__KIND", "ray")
            .env("COLTRAST_EXECUTOR__RAY_ADDRESS", format!("127.0.0.1:{PORT}"));
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let ray = self.venv.join("bin/ray").display().to_string();
        let _ = self.exec(&ray, &["stop", "--force"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn ok(out: std::process::Output, what: &str) -> std::process::Output {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn latest_index(p: &Project) -> (String, serde_json::Value, Vec<f32>) {
    let dirs = trusted_dirs(&p.path().join("artifacts"), "index");
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let d = &dirs[0];
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("manifest.json")).unwrap()).unwrap();
    let schema = coltrast::artifacts::index::embeddings_schema(384);
    let b = coltrast::table::read_parquet(&d.join("chunk_embeddings.parquet"), "index", &schema).unwrap();
    let (emb, _) = coltrast::table::embedding_values(&b, "embedding").unwrap();
    (d.file_name().unwrap().to_string_lossy().to_string(), manifest, emb)
}

fn min_cosine(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.chunks(384).zip(b.chunks(384)).map(|(x, y)| coltrast::embed::cosine(x, y)).fold(1.0, f32::min)
}

/// Forget the served model's cached embeddings, so that the next index run embeds every chunk again.
fn drop_onnx_caches(p: &Project) {
    for kind in ["embeddings", "tokens"] {
        let d = p.path().join("artifacts/.cache").join(kind);
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap().path();
            if e.file_name().unwrap().to_string_lossy().starts_with("onnx-") {
                std::fs::remove_dir_all(&e).unwrap();
            }
        }
    }
}

fn searches(p: &Project) -> Vec<String> {
    ["How do I save a model?", "Can I use a GPU?", "What is early stopping?", "How to install on Windows?"]
        .iter()
        .map(|q| p.run(&["search", q, "-k", "10", "--json"]).ok().stdout())
        .collect()
}

/// The shard outputs present on the shared dir (default: artifacts/.cache/shards).
fn finished_shards(p: &Project) -> usize {
    let d = p.path().join("artifacts/.cache/shards/shards");
    let Ok(models) = std::fs::read_dir(&d) else { return 0 };
    models
        .flat_map(|m| std::fs::read_dir(m.unwrap().path()).unwrap())
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".embeddings.parquet"))
        .count()
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid in `<dir>/paused` (written by the worker's test pause).
fn paused_pid(dir: &Path) -> u32 {
    let marker = dir.join("paused");
    let mut pid = 0;
    wait_for("a worker to pause mid-shard", 300, || {
        pid = std::fs::read_to_string(&marker)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|w| w.parse().ok()))
            .unwrap_or(0);
        pid != 0
    });
    pid
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

fn kill9(pid: u32) {
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success(), "kill -9 {pid}");
}

#[test]
fn index_on_a_two_node_ray_cluster_matches_local_and_survives_faults() {
    let venv = coltrast::settings::cache_dir().join("ray-venv");
    if !venv.join("bin/ray").is_file() || !venv.join("bin/python").is_file() {
        eprintln!("skipping: Ray is not installed ({} missing; run `make setup RAY=1`)", venv.display());
        return;
    }
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared (ai_faq_dev) not found");
        return;
    };
    let uid = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if uid.ok().as_deref() != Some("0") {
        eprintln!("skipping: network namespaces need root (Ray must only bind a namespace's loopback here)");
        return;
    }
    let t0 = Instant::now();
    let corpus = shared.join("data/ai_faq_dev");
    let p = Project::new(&format!(
        "[ingest]\npath = \"{}\"\n[chunk]\nstrategy = \"none\"\n[mine]\nnum_negatives = 1\n\
         [train]\nepochs = 1\nbase_mix = 0\n[export]\nmodel = \"base\"\n[executor]\nshard_texts = {SHARD_TEXTS}\n",
        corpus.display()
    ));

    // Local: the reference.
    let out = p.run(&["run", "index"]).ok();
    assert!(out.stages().contains(&"index ran".to_string()), "{:?}", out.stages());
    let (fp, m, local) = latest_index(&p);
    assert_eq!(m["stats"]["executor"], "local", "{m}");
    let n = local.len() / 384;
    let shards = n.div_ceil(SHARD_TEXTS);
    assert_eq!(m["stats"]["shards"], shards as u64, "{m}");
    assert_eq!(m["stats"]["texts_embedded"], n as u64, "{m}");
    let local_search = searches(&p);
    eprintln!("[ray test] upstream + local index: {:.0?}", t0.elapsed());

    let cluster = Cluster::start(&venv);
    eprintln!("[ray test] cluster up: {:.0?}", t0.elapsed());

    // Ray: the same artifacts.
    drop_onnx_caches(&p);
    let out = ok(cluster.coltrast(&p, &["run", "index", "--force", "index"]).output().unwrap(), "ray run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.lines().any(|l| l.split_whitespace().take(2).eq(["index", "ran"])), "{stderr}");
    let (fp_ray, m, ray) = latest_index(&p);
    assert_eq!(fp_ray, fp, "the executor must not change the index fingerprint");
    assert_eq!(m["stats"]["executor"], "ray", "{m}");
    assert_eq!(m["stats"]["texts_embedded"], n as u64, "{m}");
    assert_eq!(m["stats"]["shards_embedded"], shards as u64, "{m}");
    let per_node = m["stats"]["shards_per_node"].as_object().unwrap();
    assert_eq!(per_node.len(), 2, "both nodes must run shards: {m}");
    assert_eq!(per_node.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), shards as u64, "{m}");
    let cos = min_cosine(&local, &ray);
    assert!(cos >= 0.99999, "min cosine Ray vs local {cos}");
    assert_eq!(searches(&p), local_search);
    eprintln!("[ray test] ray index (min cosine {cos}, bitwise equal: {}): {:.0?}", local == ray, t0.elapsed());

    // Fault 1: a Ray worker killed while its shard runs; Ray retries the shard and the stage completes.
    drop_onnx_caches(&p);
    let pause = tempfile::tempdir().unwrap();
    let run = cluster
        .coltrast(&p, &["run", "index", "--force", "index"])
        .env("COLTRAST_TEST_WORKER_PAUSE", pause.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let worker = paused_pid(pause.path());
    let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).unwrap_or_default();
    // (libgomp may come from libtorch's lib dir, so look for libtorch's own libraries, not the dir's name)
    let torch_libs = ["libtorch_cpu.so", "libtorch.so", "libc10.so"];
    assert!(!torch_libs.iter().any(|l| maps.contains(l)), "coltrast worker must not load libtorch");
    let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap();
    let ray_worker: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{ray_worker}/cmdline")).unwrap_or_default();
    assert!(cmdline.contains("ray") || cmdline.contains("python"), "parent of the worker: {cmdline:?}");
    kill9(ray_worker);
    let out = ok(run.wait_with_output().unwrap(), "ray run with a killed worker");
    let (fp1, m, ray1) = latest_index(&p);
    assert_eq!(fp1, fp);
    assert_eq!(m["stats"]["shards_embedded"], shards as u64, "{m}");
    let cos = min_cosine(&local, &ray1);
    assert!(cos >= 0.99999, "after a killed worker: min cosine {cos}\n{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the orphaned worker to stop", 10, || !alive(worker));
    eprintln!("[ray test] killed worker retried: {:.0?}", t0.elapsed());

    // Fault 2: `coltrast run` killed mid-stage; the rerun embeds only the shard that had not finished.
    drop_onnx_caches(&p);
    let pause = tempfile::tempdir().unwrap();
    let mut run = cluster
        .coltrast(&p, &["run", "index", "--force", "index"])
        .env("COLTRAST_TEST_WORKER_PAUSE", pause.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let worker = paused_pid(pause.path());
    wait_for("every other shard to finish", 300, || finished_shards(&p) == shards - 1);
    run.kill().unwrap();
    run.wait().unwrap();
    // The driver sees coltrast gone, cancels its tasks; the paused worker loses its parent and stops.
    wait_for("the paused worker to stop after coltrast was killed", 30, || !alive(worker));
    let finished = finished_shards(&p);
    assert_eq!(finished, shards - 1);
    // --force again: the killed run replaced nothing, so the index of fault 1 would otherwise be a cache hit.
    let out =
        ok(cluster.coltrast(&p, &["run", "index", "--force", "index"]).output().unwrap(), "rerun after a killed run");
    let (fp2, m, ray2) = latest_index(&p);
    assert_eq!(fp2, fp, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(m["stats"]["shards_reused"], finished as u64, "{m}");
    assert_eq!(m["stats"]["shards_embedded"], (shards - finished) as u64, "{m}");
    assert_eq!(m["stats"]["texts_embedded"], n as u64, "{m}");
    let cos = min_cosine(&local, &ray2);
    assert!(cos >= 0.99999, "after a killed run: min cosine {cos}");
    assert_eq!(searches(&p), local_search);
    assert_eq!(finished_shards(&p), 0, "merged shard outputs are removed");
    eprintln!("[ray test] killed run resumed ({} of {shards} shards reused): {:.0?}", finished, t0.elapsed());

    // A shard that fails for good: one line naming the shard and the Ray error, exit 2.
    drop_onnx_caches(&p);
    let out = cluster
        .coltrast(
            &p,
            &[
                "run",
                "index",
                "--force",
                "index",
                "--set",
                "executor.max_retries=0",
                "--set",
                "executor.worker_bin=/bin/false",
            ],
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("coltrast: ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("shard ") && line.contains("failed on Ray") && line.contains("exited with 1"), "{line}");
    drop(cluster);
    eprintln!("[ray test] total {:.0?}", t0.elapsed());
}
