//! `coltrast exp` through the real binary: a 2 × 2 sweep on the tiny random model shares its upstream stages,
//! reruns cached, shows, diffs, plots, applies and protects its artifacts from gc; an interrupted sweep
//! (Ctrl-C, kill -9) finishes on rerun without duplicates. (A bad value failing before anything runs, and the
//! subcommands' help: tests/experiments.rs.)

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;

use coltrast_testkit::tiny::*;
use coltrast_testkit::*;
use polars::prelude::*;

const SWEEP: [&str; 6] = ["exp", "run", "--set", "mine.num_negatives=1,2", "--set", "train.learning_rate=0.001,0.002"];
/// One epoch, and base_mix 0 so that every learning rate gives its own weights (no averaging back to the base).
const TRAIN: &str = "epochs = 1\nbase_mix = 0";

fn ran_per_stage(out: &Out) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in out.stages() {
        let (stage, what) = l.split_once(' ').unwrap();
        if what == "ran" {
            *m.entry(stage.to_string()).or_insert(0) += 1;
        }
    }
    m
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect()
}

fn experiments(p: &Project) -> DataFrame {
    let f = p.path().join("artifacts/experiments/experiments.parquet");
    LazyFrame::scan_parquet(PlRefPath::new(f.to_str().unwrap()), ScanArgsParquet::default()).unwrap().collect().unwrap()
}

fn n_unique(df: &DataFrame, col: &str) -> usize {
    df.column(col).unwrap().as_materialized_series().n_unique().unwrap()
}

fn show_json(p: &Project) -> serde_json::Value {
    let out = p.run(&["exp", "show", "--json"]).ok();
    serde_json::from_str(&out.stdout()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout()))
}

/// (num_negatives, learning_rate) of each experiment `exp show --json` lists.
fn shown_settings(p: &Project) -> Vec<(i64, f64)> {
    let j = show_json(p);
    j["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = &e["settings"];
            (s["mine.num_negatives"].as_i64().unwrap(), s["train.learning_rate"].as_f64().unwrap())
        })
        .collect()
}

fn product() -> BTreeSet<(i64, u64)> {
    [(1, 0.001), (1, 0.002), (2, 0.001), (2, 0.002)].into_iter().map(|(n, lr): (i64, f64)| (n, lr.to_bits())).collect()
}

fn as_set(v: &[(i64, f64)]) -> BTreeSet<(i64, u64)> {
    v.iter().map(|(n, lr)| (*n, lr.to_bits())).collect()
}

#[test]
fn a_2x2_sweep_runs_each_stage_the_fewest_times_and_reruns_cached() {
    let p = tiny_project(TRAIN);
    let toml = std::fs::read_to_string(p.path().join("pipeline.toml")).unwrap();
    p.write("pipeline.toml", format!("# The tiny test pipeline.\n{toml}"));

    let out = p.run(&SWEEP).ok();
    // ingest, chunk and generate are shared by all four, mine by the two of each num_negatives.
    assert_eq!(
        ran_per_stage(&out),
        counts(&[
            ("ingest", 1),
            ("chunk", 1),
            ("generate", 1),
            ("mine", 2),
            ("train", 4),
            ("export", 4),
            ("index", 4),
            ("eval", 4)
        ]),
        "{}",
        out.stderr()
    );
    assert_eq!(out.stderr().matches("exp: recorded ").count(), 4, "{}", out.stderr());
    // the closing table lists the four
    assert!(out.stdout().contains("4 experiments"), "{}", out.stdout());

    // The rerun is all cached and records nothing new.
    let again = p.run(&SWEEP).ok();
    assert!(ran_per_stage(&again).is_empty(), "{}", again.stderr());
    assert_eq!(again.stages().len(), 32, "{}", again.stderr());
    assert_eq!(again.stderr().matches("already recorded as").count(), 4, "{}", again.stderr());

    // exp show: four rows with the right settings.
    let shown = shown_settings(&p);
    assert_eq!(shown.len(), 4);
    assert_eq!(as_set(&shown), product());
    let table = p.run(&["exp", "show"]).ok().stdout();
    let lines: Vec<&str> = table.lines().collect();
    let rule = lines.iter().position(|l| l.starts_with("---")).unwrap();
    assert_eq!(lines.len() - rule - 2, 4, "{table}");
    for h in ["mine.num_negatives", "train.learning_rate", "base-whole", "coltrast+hybrid", "nDCG@10", "R@1"] {
        assert!(table.contains(h), "{h}: {table}");
    }
    assert!(table.contains('*'), "the best value is marked: {table}");

    // experiments.parquet in polars: one row each, sharing what the engine shared.
    let df = experiments(&p);
    assert_eq!(df.height(), 4);
    assert_eq!(n_unique(&df, "experiment_id"), 4);
    assert_eq!(n_unique(&df, "name"), 4);
    assert_eq!(n_unique(&df, "stage.chunk.fingerprint"), 1);
    assert_eq!(n_unique(&df, "stage.mine.fingerprint"), 2);
    assert_eq!(n_unique(&df, "stage.train.fingerprint"), 4);
    assert_eq!(df.column("settings.mine.num_negatives").unwrap().dtype(), &DataType::Int64);
    assert_eq!(df.column("settings.train.learning_rate").unwrap().dtype(), &DataType::Float64);
    assert_eq!(df.column("stage.train.ran").unwrap().dtype(), &DataType::Boolean);
    assert_eq!(df.column("stat.train.best_epoch").unwrap().dtype(), &DataType::Int64);
    assert!(df.column("stat.chunk.chunks").unwrap().i64().unwrap().get(0).unwrap() >= 3);
    let ndcg = df.column("metric.coltrast/document/ndcg@10").unwrap().f64().unwrap();
    assert!((0..ndcg.len()).all(|i| ndcg.get(i).is_some_and(|v| (0.0..=1.0).contains(&v))));
    assert!(df.column("metric.base-whole/document/recall@1").is_ok());
    assert!(matches!(df.column("loss.val").unwrap().dtype(), DataType::List(_)));

    // diff: the differing setting, metrics with deltas, shared stages.
    let names: Vec<String> = show_json(&p)["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names[0], "num_negatives=1,learning_rate=0.001");
    let diff = p.run(&["exp", "diff", &names[0], &names[1]]).ok().stdout();
    assert!(diff.contains("train.learning_rate") && !diff.contains("  mine.num_negatives"), "{diff}");
    for stage in ["ingest", "chunk", "mine"] {
        let l = diff.lines().find(|l| l.trim_start().starts_with(&format!("{stage} "))).unwrap();
        assert!(l.ends_with("shared"), "{l}");
    }
    let l = diff.lines().find(|l| l.trim_start().starts_with("train ")).unwrap();
    assert!(!l.ends_with("shared"), "{l}");
    assert!(diff.contains("coltrast document nDCG@10"), "{diff}");

    // plot: a PNG, one panel per num_negatives.
    let png = p.path().join("lr.png");
    let out = p.run(&["exp", "plot", "ndcg@10", "--by", "train.learning_rate", "-o", "lr.png"]).ok();
    assert!(out.stdout().contains("4 experiments, 2 panels, 12 lines"), "{}", out.stdout());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");

    // gc keeps what the experiments reference; --experiments ignore does not.
    let kept = p.run(&["gc", "--dry-run"]).ok().stdout();
    assert!(!kept.contains("would remove"), "{kept}");
    let all = p.run(&["gc", "--dry-run", "--experiments", "ignore"]).ok().stdout();
    assert!(all.matches("would remove").count() >= 4 * 3, "{all}");

    // apply: the experiment becomes the default run (all cached), comments kept.
    let out = p.run(&["exp", "apply", &names[3]]).ok().stdout();
    assert!(out.contains("mine.num_negatives = 2") && out.contains("train.learning_rate = 0.002"), "{out}");
    let toml = std::fs::read_to_string(p.path().join("pipeline.toml")).unwrap();
    assert!(toml.starts_with("# The tiny test pipeline.\n[model]\n"), "{toml}");
    assert!(toml.contains("learning_rate = 0.002") && toml.contains("num_negatives = 2"), "{toml}");
    let run = p.run(&["run"]).ok();
    assert_eq!(run.stages().iter().filter(|l| l.ends_with("cached")).count(), 8, "{}", run.stderr());

    // remove: gc then frees exactly what only that experiment used (train, export, index, eval).
    p.run(&["exp", "remove", &names[0]]).ok();
    assert_eq!(shown_settings(&p).len(), 3);
    let freed = p.run(&["gc", "--dry-run"]).ok().stdout();
    assert_eq!(freed.matches("would remove").count(), 4, "{freed}");
    let unknown = p.run(&["exp", "remove", "nope"]);
    assert_eq!(unknown.code(), 1);
    assert!(unknown.stderr().contains("no experiment named \"nope\""), "{}", unknown.stderr());

    // report gains a section
    let report = p.run(&["report"]).ok().stdout();
    assert!(report.contains("## Experiments: 3 recorded"), "{report}");
}

/// Start the sweep paused at a fault point; returns the child and a thread collecting the rest of stderr.
fn start_sweep_at(p: &Project, point: &str) -> (std::process::Child, std::thread::JoinHandle<String>) {
    let mut child =
        p.cmd(&SWEEP).env("COLTRAST_TEST_FAULT", point).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "ended before {point}: {seen}");
        seen.push_str(&line);
        if line.contains("fault point") {
            break;
        }
    }
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = reader.read_to_string(&mut s);
        s
    });
    (child, rest)
}

#[test]
fn an_interrupted_sweep_finishes_on_rerun_without_duplicates() {
    let p = tiny_project(TRAIN);

    // Ctrl-C after the first experiment: a clean stop that says what is recorded.
    let (child, rest) = start_sweep_at(&p, "exp:recorded-1");
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = rest.join().unwrap();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: 1 of 4 experiments recorded"), "{err}");
    assert_eq!(experiments(&p).height(), 1);

    // kill -9 after the third.
    let (mut child, rest) = start_sweep_at(&p, "exp:recorded-3");
    child.kill().unwrap();
    child.wait().unwrap();
    drop(rest.join());
    assert_eq!(experiments(&p).height(), 3);

    // The rerun runs only the fourth experiment's own stages and records it once.
    let out = p.run(&SWEEP).ok();
    assert_eq!(
        ran_per_stage(&out),
        counts(&[("train", 1), ("export", 1), ("index", 1), ("eval", 1)]),
        "{}",
        out.stderr()
    );
    assert_eq!(out.stderr().matches("already recorded as").count(), 3, "{}", out.stderr());
    let df = experiments(&p);
    assert_eq!(df.height(), 4);
    assert_eq!(n_unique(&df, "experiment_id"), 4);
    assert_eq!(as_set(&shown_settings(&p)), product());
}
