//! Stage-engine behaviour on a small test-only DAG (a → b → c, a → d), so every caching rule can be shown
//! without a model: reruns of dependants only, early cutoff, tamper detection, resume scratch space, gc.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use coltrast::engine::{ExternalInput, Freshness, Outcome, Pipeline, PipelineConfig, RunOptions, Stage, StageContext};
use coltrast::Result;

#[derive(Clone)]
struct Cfg {
    input: PathBuf,
    /// a: repeat the input this many times.
    repeat: i64,
    /// b: length of a's output modulo this (so some changes give identical output).
    modulus: i64,
    /// d: a suffix.
    suffix: String,
}

/// The engine's own tests name their stages by plain strings.
impl PipelineConfig for Cfg {
    type Id = &'static str;
}

fn table(pairs: &[(&str, toml::Value)]) -> toml::Value {
    toml::Value::Table(pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
}

struct A(AtomicUsize);
struct B(AtomicUsize);
struct C(AtomicUsize);
struct D(AtomicUsize);

impl Stage<Cfg> for A {
    fn id(&self) -> &'static str {
        "a"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &[]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, c: &Cfg) -> Result<toml::Value> {
        Ok(table(&[("repeat", c.repeat.into())]))
    }
    fn external_inputs(&self, c: &Cfg) -> Result<Vec<ExternalInput>> {
        Ok(vec![ExternalInput { name: "input".into(), path: c.input.clone() }])
    }
    fn run(&self, ctx: &mut StageContext<'_, Cfg>) -> Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let text = std::fs::read_to_string(&ctx.config.input).unwrap();
        std::fs::write(ctx.output("a.txt"), text.repeat(ctx.config.repeat as usize)).unwrap();
        Ok(())
    }
}

impl Stage<Cfg> for B {
    fn id(&self) -> &'static str {
        "b"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &["a"]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, c: &Cfg) -> Result<toml::Value> {
        Ok(table(&[("modulus", c.modulus.into())]))
    }
    fn external_inputs(&self, _: &Cfg) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Cfg>) -> Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let a = std::fs::read_to_string(ctx.upstream_file("a", "a.txt")?).unwrap();
        std::fs::write(ctx.output("b.txt"), format!("{}", a.len() as i64 % ctx.config.modulus)).unwrap();
        Ok(())
    }
}

impl Stage<Cfg> for C {
    fn id(&self) -> &'static str {
        "c"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &["b"]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, _: &Cfg) -> Result<toml::Value> {
        Ok(table(&[]))
    }
    fn external_inputs(&self, _: &Cfg) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Cfg>) -> Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let b = std::fs::read_to_string(ctx.upstream_file("b", "b.txt")?).unwrap();
        std::fs::write(ctx.output("c.txt"), format!("c({b})")).unwrap();
        Ok(())
    }
}

impl Stage<Cfg> for D {
    fn id(&self) -> &'static str {
        "d"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &["a"]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, c: &Cfg) -> Result<toml::Value> {
        Ok(table(&[("suffix", c.suffix.clone().into())]))
    }
    fn external_inputs(&self, _: &Cfg) -> Result<Vec<ExternalInput>> {
        Ok(vec![])
    }
    fn run(&self, ctx: &mut StageContext<'_, Cfg>) -> Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        // Scratch space survives until success, then is removed.
        let work = ctx.work_dir()?.to_path_buf();
        std::fs::write(work.join("checkpoint"), "x").unwrap();
        let a = std::fs::read_to_string(ctx.upstream_file("a", "a.txt")?).unwrap();
        std::fs::create_dir_all(ctx.output("sub")).unwrap();
        std::fs::write(ctx.output("sub/d.txt"), format!("{a}{}", ctx.config.suffix)).unwrap();
        ctx.record_rows("sub/d.txt", 1);
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    a: A,
    b: B,
    c: C,
    d: D,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("input.txt"), "hello").unwrap();
        Fixture {
            _dir: dir,
            root,
            a: A(AtomicUsize::new(0)),
            b: B(AtomicUsize::new(0)),
            c: C(AtomicUsize::new(0)),
            d: D(AtomicUsize::new(0)),
        }
    }
    fn cfg(&self) -> Cfg {
        Cfg { input: self.root.join("input.txt"), repeat: 2, modulus: 1000, suffix: "!".into() }
    }
    fn artifacts(&self) -> PathBuf {
        self.root.join("artifacts")
    }
    fn run_with(&self, cfg: &Cfg, opts: &RunOptions) -> Result<Vec<(String, Outcome)>> {
        let p = Pipeline::new(vec![&self.a, &self.b, &self.c, &self.d], cfg, self.artifacts())?;
        Ok(p.run(opts, |_| {})?.into_iter().map(|r| (r.stage.to_string(), r.outcome)).collect())
    }
    fn run(&self, cfg: &Cfg) -> Vec<(String, Outcome)> {
        self.run_with(cfg, &RunOptions::default()).unwrap()
    }
    fn counts(&self) -> [usize; 4] {
        [
            self.a.0.load(Ordering::SeqCst),
            self.b.0.load(Ordering::SeqCst),
            self.c.0.load(Ordering::SeqCst),
            self.d.0.load(Ordering::SeqCst),
        ]
    }
}

fn outcomes(v: &[(String, Outcome)]) -> String {
    v.iter()
        .map(|(s, o)| format!("{s}:{}", if *o == Outcome::Ran { "ran" } else { "cached" }))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn second_run_is_fully_cached() {
    let f = Fixture::new();
    let cfg = f.cfg();
    assert_eq!(outcomes(&f.run(&cfg)), "a:ran b:ran c:ran d:ran");
    assert_eq!(outcomes(&f.run(&cfg)), "a:cached b:cached c:cached d:cached");
    assert_eq!(f.counts(), [1, 1, 1, 1]);
}

#[test]
fn changing_one_setting_reruns_that_stage_and_dependants_only() {
    let f = Fixture::new();
    let mut cfg = f.cfg();
    f.run(&cfg);
    cfg.modulus = 7; // b's output changes: 10 % 7 = 3 instead of 10
    assert_eq!(outcomes(&f.run(&cfg)), "a:cached b:ran c:ran d:cached");
    cfg.suffix = "?".into(); // only d
    assert_eq!(outcomes(&f.run(&cfg)), "a:cached b:cached c:cached d:ran");
    cfg.repeat = 3; // a changes, so everything below it
    assert_eq!(outcomes(&f.run(&cfg)), "a:ran b:ran c:ran d:ran");
}

#[test]
fn identical_output_keeps_downstream_cached() {
    let f = Fixture::new();
    let mut cfg = f.cfg();
    f.run(&cfg);
    // "hellohello".len() = 10; 10 % 1000 == 10 % 2000, so b reruns and writes the same bytes.
    cfg.modulus = 2000;
    assert_eq!(outcomes(&f.run(&cfg)), "a:cached b:ran c:cached d:cached");
    assert_eq!(f.counts(), [1, 2, 1, 1]);
}

#[test]
fn changed_input_file_reruns_from_the_first_stage() {
    let f = Fixture::new();
    let cfg = f.cfg();
    f.run(&cfg);
    std::fs::write(f.root.join("input.txt"), "HELLO").unwrap();
    // a and d see new bytes; b reruns but writes the same length, so c stays cached.
    assert_eq!(outcomes(&f.run(&cfg)), "a:ran b:ran c:cached d:ran");
}

#[test]
fn status_explains_what_changed() {
    let f = Fixture::new();
    let mut cfg = f.cfg();
    f.run(&cfg);
    cfg.modulus = 7;
    let p = Pipeline::new(vec![&f.a, &f.b, &f.c, &f.d], &cfg, f.artifacts()).unwrap();
    let st = p.status().unwrap();
    assert!(matches!(st[0].freshness, Freshness::UpToDate { .. }));
    match &st[1].freshness {
        Freshness::Stale { reasons } => assert_eq!(reasons, &vec!["setting modulus: 1000 -> 7".to_string()]),
        other => panic!("{other:?}"),
    }
    match &st[2].freshness {
        Freshness::Stale { reasons } => assert!(reasons[0].contains("upstream stage b"), "{reasons:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(st[3].freshness, Freshness::UpToDate { .. }));
}

fn only_dir(stage_dir: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(stage_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn tampered_artifact_is_caught_by_verify() {
    let f = Fixture::new();
    let cfg = f.cfg();
    f.run(&cfg);
    let a_file = only_dir(&f.artifacts().join("a")).join("a.txt");
    // Same size, different bytes: only --verify can tell.
    std::fs::write(&a_file, "HELLOHELLO").unwrap();
    assert_eq!(outcomes(&f.run(&cfg)), "a:cached b:cached c:cached d:cached");
    let err = f.run_with(&cfg, &RunOptions { verify: true, ..Default::default() }).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("a.txt: corrupt artifact: blake3"), "{msg}");
    assert_eq!(err.exit_code(), 1);
    // A truncated file is caught even without --verify (sizes are always checked).
    std::fs::write(&a_file, "HELLO").unwrap();
    let msg = f.run_with(&cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("size 5 but manifest says 10"), "{msg}");
    // --force rewrites it.
    let out = f.run_with(&cfg, &RunOptions { force: vec!["a".into()], ..Default::default() }).unwrap();
    assert_eq!(outcomes(&out), "a:ran b:cached c:cached d:cached");
    assert_eq!(std::fs::read_to_string(&a_file).unwrap(), "hellohello");
}

#[test]
fn untrusted_leftovers_are_ignored_and_collected() {
    let f = Fixture::new();
    let cfg = f.cfg();
    f.run(&cfg);
    let a_dir = only_dir(&f.artifacts().join("a"));
    // A directory without a manifest (as an interrupted run might have left) is never trusted.
    std::fs::remove_file(a_dir.join("manifest.json")).unwrap();
    assert_eq!(outcomes(&f.run(&cfg)), "a:ran b:cached c:cached d:cached");
    std::fs::create_dir_all(f.artifacts().join("a/.tmp-deadbeef")).unwrap();
    let mut cfg2 = cfg.clone();
    cfg2.suffix = "#".into();
    f.run(&cfg2); // an old d artifact is now unreachable
    let p = Pipeline::new(vec![&f.a, &f.b, &f.c, &f.d], &cfg2, f.artifacts()).unwrap();
    let removed = p.gc(0, false).unwrap();
    let names: Vec<String> =
        removed.iter().map(|p| p.strip_prefix(f.artifacts()).unwrap().display().to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().any(|n| n == "a/.tmp-deadbeef"));
    assert!(names.iter().any(|n| n.starts_with("d/")));
    assert_eq!(outcomes(&f.run(&cfg2)), "a:cached b:cached c:cached d:cached");
}

#[test]
fn manifest_lists_outputs_rows_and_inputs() {
    let f = Fixture::new();
    let cfg = f.cfg();
    f.run(&cfg);
    let d_dir = only_dir(&f.artifacts().join("d"));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["outputs"][0]["path"], "sub/d.txt");
    assert_eq!(m["outputs"][0]["rows"], 1);
    assert_eq!(m["outputs"][0]["size"], 11);
    assert_eq!(m["inputs"][0]["kind"], "stage");
    assert_eq!(m["settings"]["suffix"], "!");
    assert!(m["wall_time_s"].as_f64().unwrap() >= 0.0);
    // the work dir was cleaned up after success
    assert!(!std::fs::read_dir(f.artifacts().join("d")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".work-")));
}

#[test]
fn unknown_stage_is_a_user_error() {
    let f = Fixture::new();
    let err = f.run_with(&f.cfg(), &RunOptions { targets: vec!["zz".into()], ..Default::default() }).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("unknown stage \"zz\""));
    // Running only c runs a and b, not d.
    let out = f.run_with(&f.cfg(), &RunOptions { targets: vec!["c".into()], ..Default::default() }).unwrap();
    assert_eq!(outcomes(&out), "a:ran b:ran c:ran");
}

/// A stage that this process cannot run (as the libtorch stages in the coltrast binary), or whose fingerprint
/// it cannot compute; everything else is the wrapped stage's.
struct Unavailable<'a> {
    inner: &'a dyn Stage<Cfg>,
    unfingerprintable: bool,
}

impl Stage<Cfg> for Unavailable<'_> {
    fn id(&self) -> &'static str {
        self.inner.name()
    }
    fn upstream(&self) -> &'static [&'static str] {
        self.inner.upstream()
    }
    fn code_version(&self) -> u32 {
        self.inner.code_version()
    }
    fn settings(&self, c: &Cfg) -> Result<toml::Value> {
        if self.unfingerprintable {
            return Err(coltrast::Error::NeedsTorch("only libtorch knows".into()));
        }
        self.inner.settings(c)
    }
    fn external_inputs(&self, c: &Cfg) -> Result<Vec<ExternalInput>> {
        self.inner.external_inputs(c)
    }
    fn run(&self, ctx: &mut StageContext<'_, Cfg>) -> Result<()> {
        self.inner.run(ctx)
    }
    fn available(&self) -> bool {
        false
    }
}

/// An unavailable stage that must run stops the whole run before anything runs or is written (so the
/// coltrast binary can hand the command over); one that is cached, or outside the targets, does not.
#[test]
fn unavailable_stage_that_must_run_stops_the_run_before_anything_runs() {
    let f = Fixture::new();
    let cfg = f.cfg();
    let c = Unavailable { inner: &f.c, unfingerprintable: false };
    let run = |cfg: &Cfg, opts: &RunOptions| {
        let p = Pipeline::new(vec![&f.a, &f.b, &c, &f.d], cfg, f.artifacts()).unwrap();
        p.run(opts, |_| {}).map(|r| r.len())
    };
    assert!(matches!(run(&cfg, &RunOptions::default()), Err(coltrast::Error::NeedsTorch(_))));
    assert_eq!(f.counts(), [0, 0, 0, 0], "nothing ran, a included");
    assert!(!f.artifacts().join("a").exists(), "nothing was written");
    // targets that do not reach c run here
    assert_eq!(run(&cfg, &RunOptions { targets: vec!["d".into()], ..Default::default() }).unwrap(), 2);

    f.run(&cfg);
    let before = f.counts();
    assert_eq!(run(&cfg, &RunOptions::default()).unwrap(), 4, "c cached: the run needs no backend");
    assert_eq!(f.counts(), before);
    let forced = RunOptions { force: vec!["c".into()], ..Default::default() };
    assert!(matches!(run(&cfg, &forced), Err(coltrast::Error::NeedsTorch(_))));
    // b reruns, so c (downstream) would too: stopped before b runs
    let changed = Cfg { repeat: 3, ..cfg.clone() };
    assert!(matches!(run(&changed, &RunOptions::default()), Err(coltrast::Error::NeedsTorch(_))));
    assert_eq!(f.counts(), before);

    // a fingerprint only the backend can compute: status says so as an error, not as a stale row
    let c = Unavailable { inner: &f.c, unfingerprintable: true };
    let p = Pipeline::new(vec![&f.a, &f.b, &c, &f.d], &cfg, f.artifacts()).unwrap();
    assert!(matches!(p.status(), Err(coltrast::Error::NeedsTorch(_))));
}

/// A stage whose preflight check fails (as train with `train.device = "cuda"` on a machine without one);
/// everything else is the wrapped stage's.
struct Refuses<'a> {
    inner: &'a dyn Stage<Cfg>,
}

impl Stage<Cfg> for Refuses<'_> {
    fn id(&self) -> &'static str {
        self.inner.name()
    }
    fn upstream(&self) -> &'static [&'static str] {
        self.inner.upstream()
    }
    fn code_version(&self) -> u32 {
        self.inner.code_version()
    }
    fn settings(&self, c: &Cfg) -> Result<toml::Value> {
        self.inner.settings(c)
    }
    fn external_inputs(&self, c: &Cfg) -> Result<Vec<ExternalInput>> {
        self.inner.external_inputs(c)
    }
    fn run(&self, ctx: &mut StageContext<'_, Cfg>) -> Result<()> {
        self.inner.run(ctx)
    }
    fn preflight(&self, _: &Cfg) -> Result<()> {
        Err(coltrast::Error::Usage("c: no such device here".into()))
    }
}

/// A failed preflight of a stage that would run stops the run before anything runs; a cached stage's, or one
/// outside the targets, does not.
#[test]
fn failed_preflight_of_a_stage_that_must_run_stops_the_run_before_anything_runs() {
    let f = Fixture::new();
    let cfg = f.cfg();
    let c = Refuses { inner: &f.c };
    let run = |cfg: &Cfg, opts: &RunOptions| {
        let p = Pipeline::new(vec![&f.a, &f.b, &c, &f.d], cfg, f.artifacts()).unwrap();
        p.run(opts, |_| {}).map(|r| r.len())
    };
    let err = run(&cfg, &RunOptions::default()).unwrap_err();
    assert_eq!(err.to_string(), "c: no such device here");
    assert_eq!(err.exit_code(), 1);
    assert_eq!(f.counts(), [0, 0, 0, 0], "nothing ran, a included");
    assert!(!f.artifacts().join("a").exists(), "nothing was written");
    assert_eq!(run(&cfg, &RunOptions { targets: vec!["d".into()], ..Default::default() }).unwrap(), 2);

    f.run(&cfg);
    let before = f.counts();
    assert_eq!(run(&cfg, &RunOptions::default()).unwrap(), 4, "c cached: its check does not matter");
    let forced = RunOptions { force: vec!["c".into()], ..Default::default() };
    assert!(run(&cfg, &forced).is_err());
    let changed = Cfg { repeat: 3, ..cfg.clone() };
    assert!(run(&changed, &RunOptions::default()).is_err(), "a reruns, so c would: stopped before a");
    assert_eq!(f.counts(), before);
}
