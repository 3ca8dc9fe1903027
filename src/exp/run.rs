//! `exp run`: each planned experiment through the normal engine (so experiments share every artifact whose
//! fingerprint they share), then one record per experiment appended to experiments.parquet.
//!
//! Ctrl-C (or SIGTERM) stops cleanly: a handler waits for a record being appended to be complete, says how
//! many experiments are recorded and exits 130. Every stage is crash-safe on its own (see
//! [`crate::engine`]) and training resumes from its last epoch, so rerunning the same command finds the
//! finished experiments recorded and their stages cached, and runs only the rest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::Float64Array;

use super::record::{self, Appended, Cell, Record};
use super::sweep::{self, Planned};
use crate::artifacts::{eval, train};
use crate::engine::{self, Outcome, Pipeline, StageReport};
use crate::error::{Error, Result};
use crate::hash::StableHasher;
use crate::table;

/// Options of `exp run` besides the `--set` values.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--name`: the name of a single experiment, or the prefix of each name in a sweep.
    pub name: Option<String>,
    /// Re-hash inputs and cached outputs (as `coltrast run --verify`).
    pub verify: bool,
    /// Fail instead of waiting for another run's lock.
    pub no_wait: bool,
}

/// What happened to one experiment.
#[derive(Debug, Clone)]
pub struct Done {
    pub record: Record,
    /// False when an identical experiment was recorded before (a rerun).
    pub added: bool,
}

/// Sweep progress, shared with the interrupt handler; held while a record is appended.
struct Progress {
    recorded: usize,
    total: usize,
    file: PathBuf,
}

static PROGRESS: Mutex<Option<Progress>> = Mutex::new(None);

fn progress() -> std::sync::MutexGuard<'static, Option<Progress>> {
    PROGRESS.lock().unwrap_or_else(|e| e.into_inner())
}

/// On SIGINT/SIGTERM: wait for an append in progress, report, exit 130. Installed once per process.
fn install_interrupt_handler() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
            tracing::warn!("exp run: cannot install a Ctrl-C handler; Ctrl-C will still leave consistent artifacts");
            return;
        };
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                let p = progress();
                let msg = match p.as_ref() {
                    Some(p) => format!(
                        "coltrast: interrupted: {} of {} experiments recorded in {}; run the same command again to run \
                         the rest (finished stages stay cached)",
                        p.recorded,
                        p.total,
                        p.file.display()
                    ),
                    None => "coltrast: interrupted".to_string(),
                };
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "{msg}");
                std::process::exit(130);
            }
        });
    });
}

/// Plan, check, run and record the sweep. Stage lines go to stderr, as `coltrast run` prints them.
pub fn run(config: Option<PathBuf>, sets: &[String], opts: &RunOptions) -> Result<Vec<Done>> {
    let planned = sweep::plan(config, sets, opts.name.as_deref())?;
    let run_opts = engine::RunOptions { targets: vec![], force: vec![], verify: opts.verify, no_wait: opts.no_wait };
    // Hand over to coltrast-torch before anything is written if any experiment must run a libtorch stage.
    if !crate::backend::available() {
        for p in &planned {
            let s = &p.resolved.settings;
            Pipeline::of(s)?.check_available(&run_opts)?;
        }
    }
    let total = planned.len();
    let first_file = record::path(&planned[0].resolved.settings.artifacts_path());
    *progress() = Some(Progress { recorded: 0, total, file: first_file });
    install_interrupt_handler();
    let names: Vec<&str> = planned.iter().map(|p| p.name.as_str()).collect();
    eprintln!("exp: {total} experiment{}: {}", if total == 1 { "" } else { "s" }, names.join("  "));
    let sweep_started = Instant::now();
    let mut done = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        eprintln!("experiment {}/{total}: {}", i + 1, p.name);
        let s = &p.resolved.settings;
        let pipeline = Pipeline::of(s)?;
        let started = Instant::now();
        let reports = pipeline.run(&run_opts, |r| eprintln!("{}", r.line())).inspect_err(|_| {
            eprintln!("exp: experiment {} ({}) failed; those before it are recorded", i + 1, p.name);
        })?;
        let mut rec = build_record(p, &reports, started.elapsed())?;
        let file = record::path(&s.artifacts_path());
        let appended = {
            let mut guard = progress();
            let a = record::append(&file, rec.clone())?;
            if let Some(pr) = guard.as_mut() {
                pr.recorded += 1;
                pr.file = file.clone();
            }
            a
        };
        let added = match appended {
            Appended::Added(name) => {
                eprintln!("exp: recorded {name} in {}", file.display());
                rec.set(record::NAME, Cell::Str(name));
                true
            }
            Appended::AlreadyRecorded(name) => {
                eprintln!("exp: already recorded as {name} (same settings and fingerprints)");
                rec.set(record::NAME, Cell::Str(name));
                false
            }
        };
        done.push(Done { record: rec, added });
        engine::fault_point("exp", &format!("recorded-{}", i + 1));
    }
    let added = done.iter().filter(|d| d.added).count();
    eprintln!(
        "exp: {total} experiments, {added} new, {} already recorded, {}",
        total - added,
        engine::human_duration(sweep_started.elapsed())
    );
    *progress() = None;
    Ok(done)
}

/// Every leaf of a settings tree by dotted key.
fn flatten(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                flatten(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The identity of an experiment: its resolved settings and every stage's fingerprint.
pub fn experiment_id(settings: &BTreeMap<String, toml::Value>, fingerprints: &[(&str, &str)]) -> String {
    let mut h = StableHasher::new("coltrast-experiment-v1");
    h.u64(settings.len() as u64);
    for (k, v) in settings {
        h.str(k).value(v);
    }
    h.u64(fingerprints.len() as u64);
    for (stage, fp) in fingerprints {
        h.str(stage).str(fp);
    }
    h.finish()
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The record of one finished experiment.
pub fn build_record(p: &Planned, reports: &[StageReport], elapsed: Duration) -> Result<Record> {
    let mut r = Record::default();
    let tree = toml::Value::try_from(&p.resolved.settings).map_err(Error::internal)?;
    let mut flat = BTreeMap::new();
    flatten("", &tree, &mut flat);
    let fps: Vec<(&str, &str)> = reports.iter().map(|x| (x.stage, x.fingerprint.as_str())).collect();
    r.set(record::ID, Cell::Str(experiment_id(&flat, &fps)));
    r.set(record::NAME, Cell::Str(p.name.clone()));
    r.set(record::CREATED, Cell::Int(now_unix()));
    r.set(record::VERSION, Cell::Str(env!("CARGO_PKG_VERSION").into()));
    r.set(record::RUN_TIME, Cell::Float(elapsed.as_secs_f64()));
    r.set(record::PARAMS, Cell::StrList(p.params.iter().map(|(k, _)| k.clone()).collect()));
    for (k, v) in &flat {
        r.set(format!("{}{k}", record::SETTINGS), Cell::from_toml(v));
    }
    for rep in reports {
        let st = rep.stage;
        r.set(format!("{}{st}.fingerprint", record::STAGE), Cell::Str(rep.fingerprint.clone()));
        r.set(format!("{}{st}.ran", record::STAGE), Cell::Bool(rep.outcome == Outcome::Ran));
        r.set(format!("{}{st}.wall_time_s", record::STAGE), Cell::Float(rep.manifest.wall_time_s));
        for (k, v) in &rep.manifest.stats {
            // eval's per-system stats are the metric columns (all of eval.parquet), not stats
            if st == "eval" && k.contains('/') {
                continue;
            }
            if let Some(c) = Cell::from_json(v) {
                r.set(format!("{}{st}.{k}", record::STAT), c);
            }
        }
        match st {
            "eval" => add_metrics(&mut r, &rep.dir)?,
            "train" => add_losses(&mut r, &rep.dir)?,
            _ => {}
        }
    }
    Ok(r)
}

/// `metric.<system>/<level>/<metric>` from eval.parquet.
fn add_metrics(r: &mut Record, dir: &Path) -> Result<()> {
    let path = dir.join(eval::EVAL);
    let batch = table::read_parquet(&path, crate::artifacts::StageId::Eval.as_str(), &eval::eval_schema())?;
    let (sys, level, metric) =
        (table::str_col(&batch, "system")?, table::str_col(&batch, "level")?, table::str_col(&batch, "metric")?);
    let value = batch
        .column_by_name("value")
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or_else(|| Error::internal(format!("{}: column value is not Float64", path.display())))?;
    for i in 0..batch.num_rows() {
        let col = format!("{}{}/{}/{}", record::METRIC, sys.value(i), level.value(i), metric.value(i));
        r.set(col, Cell::Float(value.value(i)));
    }
    Ok(())
}

/// `loss.train` (mean over each epoch's steps, epochs 1..) and `loss.val` (epochs 0..) from train_log.parquet.
fn add_losses(r: &mut Record, dir: &Path) -> Result<()> {
    let losses = train::epoch_losses(dir)?;
    for s in ["train", "val"] {
        let v: Vec<f64> = losses.iter().filter(|l| l.split == s).map(|l| l.loss).collect();
        if !v.is_empty() {
            r.set(format!("{}{s}", record::LOSS), Cell::FloatList(v));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_depends_on_settings_and_fingerprints_only() {
        let mut s = BTreeMap::new();
        s.insert("chunk.similarity_threshold".to_string(), toml::Value::Float(0.5));
        s.insert("mine.num_negatives".to_string(), toml::Value::Integer(3));
        let a = experiment_id(&s, &[("ingest", "f1"), ("chunk", "f2")]);
        assert_eq!(a, experiment_id(&s.clone(), &[("ingest", "f1"), ("chunk", "f2")]));
        assert_ne!(a, experiment_id(&s, &[("ingest", "f1"), ("chunk", "f3")]));
        s.insert("mine.num_negatives".to_string(), toml::Value::Integer(4));
        assert_ne!(a, experiment_id(&s, &[("ingest", "f1"), ("chunk", "f2")]));
    }
}
