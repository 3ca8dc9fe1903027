//! The stage engine: fingerprints, the on-disk layout, caching with early cutoff, crash safety, locking,
//! status and garbage collection.
//!
//! A stage's fingerprint is blake3 over its name and code version, its resolved settings (stable encoding),
//! the content hashes of the files it reads from outside `artifacts/` (dataset, model), and the content hashes
//! of its upstream stages' outputs. Because upstream *content* is hashed (not upstream fingerprints), a changed
//! setting that produces byte-identical output leaves everything downstream cached (early cutoff).
//!
//! Layout: `artifacts/<stage>/<fingerprint>/` holds the outputs and `manifest.json`. A stage writes into
//! `artifacts/<stage>/.tmp-<fingerprint>/`, the engine hashes the outputs and writes the manifest last, fsyncs,
//! and renames the directory into place. Only a directory whose name is a fingerprint and that holds a
//! manifest is trusted, so an interrupted run (Ctrl-C, kill -9) leaves nothing a later run would use.
//! `artifacts/<stage>/.work-<fingerprint>/` is scratch space that survives interruption (training
//! checkpoints) and is removed after success. `artifacts/<stage>/latest` names the last fingerprint run or
//! used, for `status` diffs.
//!
//! One run at a time writes to an artifacts dir: `artifacts/.lock` is held (flock) for the whole run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::hash::{HashCache, StableHasher};

pub const MANIFEST: &str = "manifest.json";
const MANIFEST_FORMAT: u32 = 1;

/// A stage's identity. The pipeline's is the closed enum [`crate::artifacts::StageId`]; the engine's own
/// tests name stages by plain strings.
pub trait StageKey: Copy + Eq + Ord + std::hash::Hash + std::fmt::Debug + Send + Sync + 'static {
    /// The name: the directory under `artifacts/`.
    fn as_str(self) -> &'static str;
}

impl StageKey for &'static str {
    fn as_str(self) -> &'static str {
        self
    }
}

/// A configuration the engine runs stages over; it names the type of its stage ids.
pub trait PipelineConfig {
    type Id: StageKey;
}

/// A file or folder outside `artifacts/` that a stage reads.
#[derive(Debug, Clone)]
pub struct ExternalInput {
    /// The role of the input, e.g. "dataset" or "base_model".
    pub name: String,
    pub path: PathBuf,
}

/// The one contract every stage implements. `C` is the resolved configuration (the real pipeline uses
/// [`crate::settings::Settings`]; engine tests use their own).
pub trait Stage<C: PipelineConfig>: Sync {
    /// Which stage this is; its name is also the directory name under `artifacts/`.
    fn id(&self) -> C::Id;
    /// Unique, lowercase; also the directory name under `artifacts/`.
    fn name(&self) -> &'static str {
        self.id().as_str()
    }
    /// Stages whose outputs this one reads. They must come earlier in the stage list.
    fn upstream(&self) -> &'static [C::Id];
    /// Bump when the code changes what the stage writes; old artifacts then stop matching.
    fn code_version(&self) -> u32;
    /// The settings that determine the output: hashed into the fingerprint and stored in the manifest.
    fn settings(&self, config: &C) -> Result<toml::Value>;
    /// Files and folders outside the artifacts dir that the stage reads; their content is hashed.
    fn external_inputs(&self, config: &C) -> Result<Vec<ExternalInput>>;
    /// Do the work: read `ctx.upstream(..)`, write into `ctx.out_dir()`.
    fn run(&self, ctx: &mut StageContext<'_, C>) -> Result<()>;
    /// Whether this process can run the stage (the libtorch stages need [`crate::backend`]). A run that
    /// would execute an unavailable stage fails with [`Error::NeedsTorch`] before it writes anything.
    fn available(&self) -> bool {
        true
    }
    /// A check that must pass before a run that would execute this stage starts at all (e.g. the device it asks
    /// for exists), so that a bad setting fails at once instead of after the stages before it. Called for
    /// every planned stage; its error counts only when the stage would run (stale or forced).
    fn preflight(&self, _config: &C) -> Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// "external" or "stage".
    pub kind: String,
    /// The role (external) or the upstream stage's name.
    pub name: String,
    /// External inputs: the path as configured. Stage inputs: the upstream artifact dir.
    pub path: String,
    /// Content hash (file, folder tree, or an upstream stage's outputs).
    pub blake3: String,
    #[serde(default)]
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Relative to the artifact dir.
    pub path: String,
    pub blake3: String,
    pub size: u64,
    /// Row count for tables, when the stage reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// `manifest.json`: written last, it is what makes an artifact dir trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub stage: String,
    pub fingerprint: String,
    pub code_version: u32,
    pub coltrast_version: String,
    pub settings: serde_json::Value,
    pub inputs: Vec<InputRecord>,
    pub outputs: Vec<OutputRecord>,
    /// Hash of the outputs' names and hashes: what downstream fingerprints use.
    pub content_hash: String,
    /// Extra numbers a stage reports (metrics, split sizes, ...).
    #[serde(default)]
    pub stats: BTreeMap<String, serde_json::Value>,
    pub wall_time_s: f64,
    pub created_unix: u64,
}

impl Manifest {
    pub fn read(path: &Path, stage: &str) -> Result<Manifest> {
        let bytes = fs::read(path).at(path)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            stage: stage.to_string(),
            message: format!("unreadable manifest: {e}"),
        })
    }

    pub fn output(&self, name: &str) -> Option<&OutputRecord> {
        self.outputs.iter().find(|o| o.path == name)
    }
}

/// What a running stage sees.
pub struct StageContext<'a, C> {
    pub config: &'a C,
    stage: &'static str,
    out_dir: PathBuf,
    work_dir: PathBuf,
    upstream: BTreeMap<&'static str, (PathBuf, Manifest)>,
    inputs: Vec<InputRecord>,
    cache_root: PathBuf,
    rows: BTreeMap<String, u64>,
    stats: BTreeMap<String, serde_json::Value>,
}

impl<'a, C: PipelineConfig> StageContext<'a, C> {
    /// The (temporary) directory to write outputs into.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }
    /// Path of one output file.
    pub fn output(&self, name: &str) -> PathBuf {
        self.out_dir.join(name)
    }
    /// Scratch space that survives an interrupted run with the same fingerprint (checkpoints).
    pub fn work_dir(&self) -> Result<&Path> {
        fs::create_dir_all(&self.work_dir).at(&self.work_dir)?;
        Ok(&self.work_dir)
    }
    /// The artifact dir of an upstream stage.
    pub fn upstream_dir(&self, stage: C::Id) -> Result<&Path> {
        let stage = stage.as_str();
        self.upstream
            .get(stage)
            .map(|(d, _)| d.as_path())
            .ok_or_else(|| Error::internal(format!("stage {} did not declare upstream {stage}", self.stage)))
    }
    /// Path of a file in an upstream artifact.
    pub fn upstream_file(&self, stage: C::Id, name: &str) -> Result<PathBuf> {
        Ok(self.upstream_dir(stage)?.join(name))
    }
    pub fn upstream_manifest(&self, stage: C::Id) -> Result<&Manifest> {
        let stage = stage.as_str();
        self.upstream
            .get(stage)
            .map(|(_, m)| m)
            .ok_or_else(|| Error::internal(format!("stage {} did not declare upstream {stage}", self.stage)))
    }
    /// Content hash of a named external input (e.g. "base_model"), as used in the fingerprint.
    pub fn input_hash(&self, name: &str) -> Result<&str> {
        self.inputs
            .iter()
            .find(|i| i.kind == "external" && i.name == name)
            .map(|i| i.blake3.as_str())
            .ok_or_else(|| Error::internal(format!("stage {} has no external input {name}", self.stage)))
    }
    /// Caches shared across fingerprints (e.g. the embedding cache): `artifacts/.cache`.
    pub fn cache_root(&self) -> &Path {
        &self.cache_root
    }
    /// The name of the running stage.
    pub fn stage(&self) -> &'static str {
        self.stage
    }
    /// Record a table's row count for the manifest.
    pub fn record_rows(&mut self, file: &str, rows: u64) {
        self.rows.insert(file.to_string(), rows);
    }
    /// Record a number for the manifest (`coltrast show` prints it).
    pub fn record_stat(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.stats.insert(key.to_string(), value.into());
    }
    /// A test hook: when `COLTRAST_TEST_FAULT=<stage>:<point>`, stop here until killed. Lets tests kill -9 a
    /// run at a known place.
    pub fn fault_point(&self, point: &str) {
        fault_point(self.stage, point);
    }
}

/// The same test hook outside a stage (e.g. `exp:recorded-2` between the experiments of a sweep).
pub fn fault_point(stage: &str, point: &str) {
    if let Ok(spec) = std::env::var("COLTRAST_TEST_FAULT") {
        if spec == format!("{stage}:{point}") {
            eprintln!("coltrast: fault point {spec} reached; waiting to be killed");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Cached,
    Ran,
}

#[derive(Debug, Clone)]
pub struct StageReport {
    pub stage: &'static str,
    pub outcome: Outcome,
    pub fingerprint: String,
    pub dir: PathBuf,
    pub wall: Duration,
    pub manifest: Manifest,
}

impl StageReport {
    /// The line `coltrast run` prints for a stage: its name, `cached` or `ran`, the wall time, the artifact dir.
    pub fn line(&self) -> String {
        let what = match self.outcome {
            Outcome::Cached => "cached",
            Outcome::Ran => "ran",
        };
        format!("{:<8} {:<6} {:>9}  {}", self.stage, what, human_duration(self.wall), self.dir.display())
    }
}

/// A duration for people: `12 ms`, `3.4 s`, `2m05s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// Options for [`Pipeline::run`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stages to run (with what they need); empty means all.
    pub targets: Vec<String>,
    /// Stages to rerun even when cached.
    pub force: Vec<String>,
    /// Re-hash inputs and cached outputs instead of trusting metadata.
    pub verify: bool,
    /// Refuse instead of waiting when another run holds the lock.
    pub no_wait: bool,
}

/// Why a stage is or isn't up to date, for `coltrast status`.
#[derive(Debug, Clone, PartialEq)]
pub enum Freshness {
    UpToDate {
        fingerprint: String,
    },
    /// Would run; the reasons are human-readable lines ("setting chunk.x: 0.7 -> 0.8").
    Stale {
        reasons: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct StageStatus {
    pub stage: &'static str,
    pub freshness: Freshness,
}

/// A closed list of stages over one configuration and one artifacts dir.
pub struct Pipeline<'a, C: PipelineConfig> {
    stages: Vec<&'a dyn Stage<C>>,
    config: &'a C,
    artifacts: PathBuf,
}

impl<'a> Pipeline<'a, crate::settings::Settings> {
    /// The pipeline of [`crate::stages`] over resolved settings and their artifacts dir.
    pub fn of(settings: &'a crate::settings::Settings) -> Result<Self> {
        Pipeline::new(crate::stages::all(), settings, settings.artifacts_path())
    }
}

impl<'a, C: PipelineConfig> Pipeline<'a, C> {
    /// Checks that names are unique and every upstream comes earlier in the list.
    pub fn new(stages: Vec<&'a dyn Stage<C>>, config: &'a C, artifacts: PathBuf) -> Result<Self> {
        let mut seen = BTreeSet::new();
        for s in &stages {
            for up in s.upstream().iter().map(|u| u.as_str()) {
                if !seen.contains(up) {
                    return Err(Error::internal(format!("stage {} needs {up}, which is not before it", s.name())));
                }
            }
            if !seen.insert(s.name()) {
                return Err(Error::internal(format!("stage {} listed twice", s.name())));
            }
        }
        Ok(Pipeline { stages, config, artifacts })
    }

    pub fn artifacts_dir(&self) -> &Path {
        &self.artifacts
    }

    pub fn stage_names(&self) -> Vec<&'static str> {
        self.stages.iter().map(|s| s.name()).collect()
    }

    fn find(&self, name: &str) -> Result<&'a dyn Stage<C>> {
        self.stages.iter().copied().find(|s| s.name() == name).ok_or_else(|| {
            Error::Usage(format!("unknown stage {name:?}; stages are: {}", self.stage_names().join(", ")))
        })
    }

    /// The targets plus everything upstream of them, in list order.
    fn closure(&self, targets: &[String]) -> Result<Vec<&'a dyn Stage<C>>> {
        if targets.is_empty() {
            return Ok(self.stages.clone());
        }
        let mut need: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = Vec::new();
        for t in targets {
            stack.push(self.find(t)?.name());
        }
        while let Some(n) = stack.pop() {
            if need.insert(n) {
                stack.extend(self.find(n)?.upstream().iter().map(|u| u.as_str()));
            }
        }
        Ok(self.stages.iter().copied().filter(|s| need.contains(s.name())).collect())
    }

    fn hash_cache(&self, verify: bool) -> HashCache {
        let mut c = HashCache::load(self.artifacts.join(".cache").join("file-hashes.json"));
        c.bypass = verify;
        c
    }

    /// Everything that goes into a fingerprint, and the fingerprint.
    fn fingerprint(
        &self,
        stage: &dyn Stage<C>,
        upstream: &BTreeMap<&'static str, (PathBuf, Manifest)>,
        hashes: &mut HashCache,
    ) -> Result<(String, serde_json::Value, Vec<InputRecord>)> {
        let settings = stage.settings(self.config)?;
        let mut h = StableHasher::new("coltrast-stage-v1");
        h.str(stage.name()).u64(stage.code_version() as u64).value(&settings);
        let mut inputs = Vec::new();
        for ext in stage.external_inputs(self.config)? {
            if !ext.path.exists() {
                return Err(Error::Usage(format!(
                    "{}: {} not found (stage {}){}",
                    ext.path.display(),
                    ext.name,
                    stage.name(),
                    match ext.name.as_str() {
                        "teacher" =>
                            "; run `make setup MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\"` to install \
                                      all-mpnet-base-v2 (~440 MB), or set train.teacher = \"none\"",
                        "llm" =>
                            " (generate.llm_model); run `make setup MODELS=\"all-MiniLM-L6-v2 SmolLM2-135M-Instruct\"` \
                                      to install SmolLM2-135M-Instruct (~98 MB), or drop \"llm\" from generate.sources",
                        n if n.contains("model") => "; run `make setup` to install the base model",
                        _ => "",
                    }
                )));
            }
            let (hash, size) = hashes.path(&ext.path)?;
            h.str("external").str(&ext.name).str(&hash);
            inputs.push(InputRecord {
                kind: "external".into(),
                name: ext.name,
                path: ext.path.display().to_string(),
                blake3: hash,
                size,
            });
        }
        for up in stage.upstream().iter().map(|u| u.as_str()) {
            let (dir, m) = upstream.get(up).ok_or_else(|| Error::internal(format!("upstream {up} not resolved")))?;
            h.str("stage").str(up).str(&m.content_hash);
            inputs.push(InputRecord {
                kind: "stage".into(),
                name: up.to_string(),
                path: dir.display().to_string(),
                blake3: m.content_hash.clone(),
                size: m.outputs.iter().map(|o| o.size).sum(),
            });
        }
        let json = serde_json::to_value(&settings).map_err(Error::internal)?;
        Ok((h.finish(), json, inputs))
    }

    fn stage_dir(&self, stage: &str) -> PathBuf {
        self.artifacts.join(stage)
    }

    /// Load and check a trusted artifact dir. `None` if it doesn't exist.
    fn load_artifact(&self, stage: &str, fp: &str, verify: bool) -> Result<Option<Manifest>> {
        let dir = self.stage_dir(stage).join(fp);
        let mpath = dir.join(MANIFEST);
        if !mpath.is_file() {
            return Ok(None);
        }
        let m = Manifest::read(&mpath, stage)?;
        let corrupt = |path: PathBuf, message: String| Error::Corrupt { path, stage: stage.to_string(), message };
        if m.fingerprint != fp || m.stage != stage || m.format != MANIFEST_FORMAT {
            return Err(corrupt(mpath, "manifest does not match its directory".into()));
        }
        for o in &m.outputs {
            let p = dir.join(&o.path);
            let meta = fs::metadata(&p).map_err(|e| corrupt(p.clone(), format!("listed in manifest but {e}")))?;
            if meta.len() != o.size {
                return Err(corrupt(p, format!("size {} but manifest says {}", meta.len(), o.size)));
            }
            if verify {
                let (hash, _) = crate::hash::hash_file(&p)?;
                if hash != o.blake3 {
                    return Err(corrupt(p, format!("blake3 {hash} but manifest says {}", o.blake3)));
                }
            }
        }
        Ok(Some(m))
    }

    fn take_lock(&self, no_wait: bool) -> Result<fs::File> {
        fs::create_dir_all(&self.artifacts).at(&self.artifacts)?;
        let path = self.artifacts.join(".lock");
        let file = fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path).at(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default().trim().to_string();
                if no_wait {
                    return Err(Error::Locked { path, holder });
                }
                eprintln!("coltrast: waiting for another run (pid {holder}) that holds {}", path.display());
                file.lock().at(&path)?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
        use std::io::{Seek, Write};
        let mut f = &file;
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = write!(f, "{}", std::process::id());
        Ok(file)
    }

    /// Fails with [`Error::NeedsTorch`] when `run` with these options would execute a stage that this process
    /// cannot run (so the caller can hand the command over before anything is written).
    pub fn check_available(&self, opts: &RunOptions) -> Result<()> {
        for f in &opts.force {
            self.find(f)?;
        }
        let plan = self.closure(&opts.targets)?;
        if plan.iter().any(|st| !st.available()) {
            let statuses = self.status()?;
            for st in plan.iter().filter(|st| !st.available()) {
                let forced = opts.force.iter().any(|f| f == st.name());
                let stale =
                    statuses.iter().any(|x| x.stage == st.name() && matches!(x.freshness, Freshness::Stale { .. }));
                if forced || stale {
                    return Err(Error::NeedsTorch(format!("stage {} must run and needs libtorch", st.name())));
                }
            }
        }
        Ok(())
    }

    /// The first [`Stage::preflight`] error of a planned stage that would run (stale or forced). Checks are
    /// cheap; status (fingerprints) is computed only when one fails.
    pub fn preflight(&self, opts: &RunOptions) -> Result<()> {
        let plan = self.closure(&opts.targets)?;
        let failed: Vec<(&'static str, Error)> =
            plan.iter().filter_map(|st| st.preflight(self.config).err().map(|e| (st.name(), e))).collect();
        if failed.is_empty() {
            return Ok(());
        }
        let statuses = self.status()?;
        for (name, err) in failed {
            let forced = opts.force.iter().any(|f| f == name);
            let stale = statuses.iter().any(|x| x.stage == name && matches!(x.freshness, Freshness::Stale { .. }));
            if forced || stale {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Run the targets (and what they need). Cached stages are skipped; each report says which ran.
    pub fn run(&self, opts: &RunOptions, mut on_report: impl FnMut(&StageReport)) -> Result<Vec<StageReport>> {
        self.check_available(opts)?;
        self.preflight(opts)?;
        let plan = self.closure(&opts.targets)?;
        let _lock = self.take_lock(opts.no_wait)?;
        let mut hashes = self.hash_cache(opts.verify);
        let mut done: BTreeMap<&'static str, (PathBuf, Manifest)> = BTreeMap::new();
        let mut reports = Vec::new();
        for stage in plan {
            let started = Instant::now();
            let upstream: BTreeMap<_, _> =
                stage.upstream().iter().map(|u| (u.as_str(), done[u.as_str()].clone())).collect();
            let (fp, settings, inputs) = self.fingerprint(stage, &upstream, &mut hashes)?;
            hashes.save();
            let sdir = self.stage_dir(stage.name());
            let final_dir = sdir.join(&fp);
            let forced = opts.force.iter().any(|f| f == stage.name());
            let cached = if forced { None } else { self.load_artifact(stage.name(), &fp, opts.verify)? };
            let (manifest, outcome) = match cached {
                Some(m) => (m, Outcome::Cached),
                None => {
                    let m = self.execute(stage, &fp, settings, inputs, upstream, started)?;
                    (m, Outcome::Ran)
                }
            };
            let _ = fsutil::write_atomic(&sdir.join("latest"), fp.as_bytes());
            let report = StageReport {
                stage: stage.name(),
                outcome,
                fingerprint: fp,
                dir: final_dir.clone(),
                wall: started.elapsed(),
                manifest: manifest.clone(),
            };
            on_report(&report);
            reports.push(report);
            done.insert(stage.name(), (final_dir, manifest));
        }
        Ok(reports)
    }

    fn execute(
        &self,
        stage: &dyn Stage<C>,
        fp: &str,
        settings: serde_json::Value,
        inputs: Vec<InputRecord>,
        upstream: BTreeMap<&'static str, (PathBuf, Manifest)>,
        started: Instant,
    ) -> Result<Manifest> {
        let sdir = self.stage_dir(stage.name());
        fs::create_dir_all(&sdir).at(&sdir)?;
        let tmp = sdir.join(format!(".tmp-{fp}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp)?;
        }
        fs::create_dir_all(&tmp).at(&tmp)?;
        let work = sdir.join(format!(".work-{fp}"));
        let mut ctx = StageContext {
            config: self.config,
            stage: stage.name(),
            out_dir: tmp.clone(),
            work_dir: work.clone(),
            upstream,
            inputs: inputs.clone(),
            cache_root: self.artifacts.join(".cache"),
            rows: BTreeMap::new(),
            stats: BTreeMap::new(),
        };
        tracing::info!(stage = stage.name(), fingerprint = &fp[..12], "running");
        stage.run(&mut ctx)?;
        fault_point(stage.name(), "before-manifest");

        let mut files = Vec::new();
        crate::hash::walk_files(&tmp, &tmp, &mut files)?;
        let mut outputs = Vec::new();
        let mut ch = StableHasher::new("coltrast-content-v1");
        for rel in files {
            let rel_s = rel.to_string_lossy().replace('\\', "/");
            if rel_s == MANIFEST {
                continue;
            }
            let (hash, size) = crate::hash::hash_file(&tmp.join(&rel))?;
            ch.str(&rel_s).str(&hash);
            outputs.push(OutputRecord { rows: ctx.rows.get(&rel_s).copied(), path: rel_s, blake3: hash, size });
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            stage: stage.name().to_string(),
            fingerprint: fp.to_string(),
            code_version: stage.code_version(),
            coltrast_version: env!("CARGO_PKG_VERSION").to_string(),
            settings,
            inputs,
            outputs,
            content_hash: ch.finish(),
            stats: std::mem::take(&mut ctx.stats),
            wall_time_s: started.elapsed().as_secs_f64(),
            created_unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        fsutil::sync_tree(&tmp)?;
        let mbytes = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
        fsutil::write_atomic(&tmp.join(MANIFEST), &mbytes)?;
        let final_dir = sdir.join(fp);
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).at(&final_dir)?;
        }
        fs::rename(&tmp, &final_dir).at(&final_dir)?;
        fsutil::sync_dir(&sdir);
        if work.exists() {
            let _ = fs::remove_dir_all(&work);
        }
        Ok(manifest)
    }

    /// For each stage, whether `run` would skip it, and if not, why. Reads only; takes no lock.
    pub fn status(&self) -> Result<Vec<StageStatus>> {
        let mut hashes = self.hash_cache(false);
        let mut current: BTreeMap<&'static str, (PathBuf, Manifest)> = BTreeMap::new();
        let mut out = Vec::new();
        for stage in &self.stages {
            let stale_up: Vec<&str> =
                stage.upstream().iter().map(|u| u.as_str()).filter(|u| !current.contains_key(u)).collect();
            let previous = self.latest(stage.name());
            if !stale_up.is_empty() {
                let mut reasons: Vec<String> =
                    stale_up.iter().map(|u| format!("upstream stage {u} will run first")).collect();
                if previous.is_none() {
                    reasons.push("never run".into());
                }
                out.push(StageStatus { stage: stage.name(), freshness: Freshness::Stale { reasons } });
                continue;
            }
            let upstream: BTreeMap<_, _> =
                stage.upstream().iter().map(|u| (u.as_str(), current[u.as_str()].clone())).collect();
            let (fp, settings, inputs) = match self.fingerprint(*stage, &upstream, &mut hashes) {
                Ok(x) => x,
                // Only libtorch can fingerprint this stage here: the command goes to coltrast-torch.
                Err(e @ Error::NeedsTorch(_)) => return Err(e),
                Err(e) => {
                    out.push(StageStatus {
                        stage: stage.name(),
                        freshness: Freshness::Stale { reasons: vec![format!("cannot fingerprint: {e}")] },
                    });
                    continue;
                }
            };
            match self.load_artifact(stage.name(), &fp, false) {
                Ok(Some(m)) => {
                    current.insert(stage.name(), (self.stage_dir(stage.name()).join(&fp), m));
                    out.push(StageStatus { stage: stage.name(), freshness: Freshness::UpToDate { fingerprint: fp } });
                }
                Ok(None) => {
                    let reasons = match previous {
                        None => vec!["never run".to_string()],
                        Some(prev) => diff_reasons(&prev, stage.code_version(), &settings, &inputs),
                    };
                    out.push(StageStatus { stage: stage.name(), freshness: Freshness::Stale { reasons } });
                }
                Err(e) => out.push(StageStatus {
                    stage: stage.name(),
                    freshness: Freshness::Stale { reasons: vec![e.to_string()] },
                }),
            }
        }
        hashes.save();
        Ok(out)
    }

    /// The manifest of the last run of a stage (from `artifacts/<stage>/latest`), if it is still there.
    pub fn latest(&self, stage: &str) -> Option<Manifest> {
        let fp = fs::read_to_string(self.stage_dir(stage).join("latest")).ok()?;
        let p = self.stage_dir(stage).join(fp.trim()).join(MANIFEST);
        Manifest::read(&p, stage).ok()
    }

    /// The artifact dir and manifest of a stage for the current settings, falling back to its last run.
    pub fn show(&self, stage: &str) -> Result<(PathBuf, Manifest, bool)> {
        self.find(stage)?;
        let statuses = self.status()?;
        let st = statuses.iter().find(|s| s.stage == stage).ok_or_else(|| Error::internal("status"))?;
        if let Freshness::UpToDate { fingerprint } = &st.freshness {
            let dir = self.stage_dir(stage).join(fingerprint);
            let m = Manifest::read(&dir.join(MANIFEST), stage)?;
            return Ok((dir, m, true));
        }
        match self.latest(stage) {
            Some(m) => Ok((self.stage_dir(stage).join(&m.fingerprint), m, false)),
            None => Err(Error::Usage(format!("stage {stage} has not run yet; try `coltrast run {stage}`"))),
        }
    }

    /// Remove artifact dirs not reachable from the current settings (keeping the `keep` newest per stage),
    /// and leftovers of interrupted runs. Returns the removed (or, with `dry_run`, removable) dirs.
    pub fn gc(&self, keep: usize, dry_run: bool) -> Result<Vec<PathBuf>> {
        self.gc_pinned(keep, dry_run, &BTreeSet::new())
    }

    /// [`Pipeline::gc`], also keeping every artifact named in `pinned` as `(stage, fingerprint)` (those that
    /// recorded experiments reference, see [`crate::exp`]).
    pub fn gc_pinned(&self, keep: usize, dry_run: bool, pinned: &BTreeSet<(String, String)>) -> Result<Vec<PathBuf>> {
        let _lock = self.take_lock(false)?;
        let statuses = self.status()?;
        let mut removed = Vec::new();
        for stage in &self.stages {
            let sdir = self.stage_dir(stage.name());
            let Ok(rd) = fs::read_dir(&sdir) else { continue };
            let current = statuses.iter().find(|s| s.stage == stage.name()).and_then(|s| match &s.freshness {
                Freshness::UpToDate { fingerprint } => Some(fingerprint.clone()),
                _ => None,
            });
            let mut candidates: Vec<(u64, PathBuf)> = Vec::new();
            for e in rd {
                let e = e.at(&sdir)?;
                let name = e.file_name().to_string_lossy().to_string();
                let path = e.path();
                if name.starts_with(".tmp-") || name.starts_with(".work-") {
                    removed.push(path);
                    continue;
                }
                if !path.is_dir() || Some(&name) == current.as_ref() {
                    continue;
                }
                if pinned.contains(&(stage.name().to_string(), name.clone())) {
                    continue;
                }
                let created = Manifest::read(&path.join(MANIFEST), stage.name()).map(|m| m.created_unix).unwrap_or(0);
                candidates.push((created, path));
            }
            candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            removed.extend(candidates.into_iter().skip(keep).map(|(_, p)| p));
        }
        if !dry_run {
            for p in &removed {
                fs::remove_dir_all(p).at(p)?;
            }
        }
        Ok(removed)
    }
}

fn diff_reasons(
    prev: &Manifest,
    code_version: u32,
    settings: &serde_json::Value,
    inputs: &[InputRecord],
) -> Vec<String> {
    let mut reasons = Vec::new();
    if prev.code_version != code_version {
        reasons.push(format!("code version {} -> {}", prev.code_version, code_version));
    }
    let (mut a, mut b) = (BTreeMap::new(), BTreeMap::new());
    crate::settings::flatten("", &prev.settings, &mut a);
    crate::settings::flatten("", settings, &mut b);
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
            reasons.push(format!("setting {k}: {} -> {}", show(x), show(y)));
        }
    }
    for i in inputs {
        match prev.inputs.iter().find(|p| p.kind == i.kind && p.name == i.name) {
            Some(p) if p.blake3 == i.blake3 => {}
            Some(_) if i.kind == "stage" => reasons.push(format!("output of upstream stage {} changed", i.name)),
            Some(_) => reasons.push(format!("input {} ({}) changed", i.name, i.path)),
            None => reasons.push(format!("new input {}", i.name)),
        }
    }
    if reasons.is_empty() {
        reasons.push("artifact missing (removed by gc or by hand)".into());
    }
    reasons
}
