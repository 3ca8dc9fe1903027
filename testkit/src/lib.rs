//! Helpers shared by the integration tests of `coltrast` (tests/) and `coltrast-torch` (torch/tests/): a
//! [`Project`] in its own temp dir run through the real binary, a served project ([`server`]), and a tiny random
//! BERT/MPNet with a small dataset ([`tiny`]), written in pure Rust so that tests without libtorch can use it.

pub mod server;
pub mod tiny;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: `coltrast` in the coltrast package's tests, `coltrast-torch` in torch/'s. cargo sets
/// `CARGO_BIN_EXE_<name>` for an integration test of the package that has the binary, when it builds the test
/// and when it runs it (this library is built once for both packages, so it reads the run-time variable).
pub fn bin() -> PathBuf {
    std::env::var_os("CARGO_BIN_EXE_coltrast")
        .or_else(|| std::env::var_os("CARGO_BIN_EXE_coltrast-torch"))
        .map(PathBuf::from)
        .expect("CARGO_BIN_EXE_coltrast or CARGO_BIN_EXE_coltrast-torch: run the integration tests with `cargo test`")
}

/// The `coltrast` binary (no libtorch) when the binary under test is coltrast-torch: the one cargo built next to
/// it (`cargo test --workspace` and `make test` build both; `cargo test -p coltrast-torch` alone does not build
/// it). Panics, saying so, when it is missing. In coltrast's own tests it is [`bin`].
pub fn coltrast_bin() -> PathBuf {
    let b = bin().with_file_name("coltrast");
    assert!(
        b.is_file(),
        "{}: missing; this test runs the coltrast binary beside coltrast-torch: build both \
         (`cargo build --release -p coltrast`, or `cargo test --workspace`)",
        b.display()
    );
    b
}

/// A project dir with a pipeline.toml; commands run inside it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(pipeline_toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pipeline.toml"), pipeline_toml).unwrap();
        Project { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }
    /// `bin() args` in the project dir, without the caller's COLTRAST_LOG and setting overrides.
    pub fn cmd(&self, args: &[&str]) -> Command {
        self.cmd_of(&bin(), args)
    }
    /// [`Self::cmd`] with another binary (e.g. [`coltrast_bin`]).
    pub fn cmd_of(&self, binary: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(binary);
        c.current_dir(self.path()).args(args);
        c.env_remove("COLTRAST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("COLTRAST_") && k.contains("__") {
                c.env_remove(k);
            }
        }
        c
    }
    pub fn run(&self, args: &[&str]) -> Out {
        Out(self.cmd(args).output().unwrap(), args.join(" "))
    }
}

pub struct Out(pub Output, pub String);

impl Out {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).to_string()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).to_string()
    }
    /// Panics with the command, stdout and stderr unless it exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code(),
            0,
            "`coltrast {}` failed\nstdout:\n{}\nstderr:\n{}",
            self.1,
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// The stage lines of `run`: "ingest ran", "ingest cached", ...
    pub fn stages(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (s, o) = (w.next()?, w.next()?);
                (o == "ran" || o == "cached").then(|| format!("{s} {o}"))
            })
            .collect()
    }
}

/// Start `coltrast <args>` with `COLTRAST_TEST_FAULT=<point>` and return once it has reached that fault point
/// (it then waits to be killed).
pub fn start_paused(p: &Project, args: &[&str], point: &str) -> std::process::Child {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let mut child = p
        .cmd(args)
        .env("COLTRAST_TEST_FAULT", point)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "fault point {point} never reached");
        match lines.next() {
            Some(Ok(l)) if l.contains("fault point") => break,
            Some(_) => continue,
            None => panic!("process ended before reaching {point}"),
        }
    }
    child
}

/// A small valid seed-format dataset with `n` projects.
pub fn seed_json(n: usize) -> String {
    let projects: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r##"{{"project_id":"p{i}","readme_content":"# Project {i}\n\nIt does thing {i}. It uses model M{i}.","qa_pairs":[{{"question":"What does project {i} do?","answer":"Thing {i}.","context":"Overview"}}]}}"##
            )
        })
        .collect();
    format!("{{\"projects\":[{}]}}", projects.join(","))
}

/// The repository root (the workspace's; this crate is its testkit/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit/ is inside the repository").to_path_buf()
}

/// Path to ../shared (beside the repository), if this checkout has one.
pub fn shared_dir() -> Option<PathBuf> {
    let p = repo_root().join("../shared");
    p.is_dir().then_some(p)
}

/// All files under `dir` (relative path, bytes), skipping dotfiles and manifest.json.
pub fn tree_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut es: Vec<_> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().path()).collect();
        es.sort();
        for p in es {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with('.') || name == "manifest.json" {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push((p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Trusted artifact dirs (fingerprint-named, with a manifest) of a stage.
pub fn trusted_dirs(artifacts: &Path, stage: &str) -> Vec<PathBuf> {
    let d = artifacts.join(stage);
    let Ok(rd) = std::fs::read_dir(&d) else { return vec![] };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .filter(|p| p.join("manifest.json").is_file())
        .collect();
    v.sort();
    v
}
