//! The real binary end to end on the ingest stage: caching, status, crash safety, locking, bad input.

use std::process::Stdio;
use std::time::Duration;

use coltrast_testkit::*;

const TOML: &str = "[ingest]\npath = \"data.json\"\n";

#[test]
fn run_then_cached_then_rerun_on_change() {
    let p = Project::new(TOML);
    p.write("data.json", seed_json(3));
    let out = p.run(&["run", "ingest"]).ok();
    assert_eq!(out.stages(), ["ingest ran"]);
    let out = p.run(&["run", "ingest"]).ok();
    assert_eq!(out.stages(), ["ingest cached"]);
    let st = p.run(&["status"]).ok().stdout();
    assert!(st.starts_with("ingest   up to date"), "{st}");
    // The same bytes under another path: still cached (content, not path, is the key).
    std::fs::rename(p.path().join("data.json"), p.path().join("moved.json")).unwrap();
    let out = p.run(&["run", "ingest", "--set", "ingest.path=moved.json"]).ok();
    assert_eq!(out.stages(), ["ingest cached"]);
    // Changed content: reruns, and status says why before it does.
    p.write("moved.json", seed_json(4));
    let st = p.run(&["status", "--set", "ingest.path=moved.json"]).ok().stdout();
    assert!(st.contains("input dataset") && st.contains("changed"), "{st}");
    let out = p.run(&["run", "ingest", "--set", "ingest.path=moved.json"]).ok();
    assert_eq!(out.stages(), ["ingest ran"]);
    let show = p.run(&["show", "ingest", "--set", "ingest.path=moved.json"]).ok().stdout();
    assert!(show.contains("projects.parquet  (4 rows"), "{show}");
    assert!(show.contains("\"content_hash\""), "{show}");
}

#[test]
fn setting_change_is_explained_by_status() {
    let p = Project::new(TOML);
    p.write("data.json", seed_json(2));
    p.run(&["run", "ingest"]).ok();
    let st = p.run(&["status", "--set", "ingest.format=seed-json"]).ok().stdout();
    assert!(st.contains("setting format: \"auto\" -> \"seed-json\""), "{st}");
}

fn start_paused_ingest(p: &Project, point: &str, extra: &[&str]) -> std::process::Child {
    let mut args = vec!["run", "ingest"];
    args.extend_from_slice(extra);
    start_paused(p, &args, point)
}

#[test]
fn kill_9_leaves_nothing_trusted_and_rerun_matches_clean_run() {
    for point in ["ingest:between-tables", "ingest:before-manifest"] {
        let p = Project::new(TOML);
        p.write("data.json", seed_json(5));
        let mut child = start_paused_ingest(&p, point, &[]);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let arts = p.path().join("artifacts");
        assert!(trusted_dirs(&arts, "ingest").is_empty(), "{point}: an interrupted run left a trusted dir");
        let st = p.run(&["status"]).ok().stdout();
        assert!(st.contains("ingest   will run"), "{st}");
        let out = p.run(&["run", "ingest"]).ok();
        assert_eq!(out.stages(), ["ingest ran"], "{point}");
        let dirs = trusted_dirs(&arts, "ingest");
        assert_eq!(dirs.len(), 1);

        let clean = Project::new(TOML);
        clean.write("data.json", seed_json(5));
        clean.run(&["run", "ingest"]).ok();
        let clean_dirs = trusted_dirs(&clean.path().join("artifacts"), "ingest");
        assert_eq!(dirs[0].file_name(), clean_dirs[0].file_name(), "same fingerprint");
        assert_eq!(tree_bytes(&dirs[0]), tree_bytes(&clean_dirs[0]), "{point}: same bytes as an uninterrupted run");
    }
}

#[test]
fn second_run_waits_for_the_lock_or_refuses() {
    let p = Project::new(TOML);
    p.write("data.json", seed_json(3));
    let mut holder = start_paused_ingest(&p, "ingest:before-manifest", &[]);
    // --no-wait refuses cleanly.
    let out = p.run(&["run", "ingest", "--no-wait"]);
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(out.stderr().contains("locked by another coltrast run"), "{}", out.stderr());
    assert_eq!(out.stderr().lines().count(), 1, "{}", out.stderr());
    // Without it, the second run waits, and finishes once the first one is gone.
    let waiter = p.cmd(&["run", "ingest"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiter.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("waiting for another run"), "{err}");
    assert_eq!(trusted_dirs(&p.path().join("artifacts"), "ingest").len(), 1);
    p.run(&["run", "ingest", "--verify"]).ok();
}

#[test]
fn concurrent_runs_do_not_corrupt() {
    let p = Project::new(TOML);
    p.write("data.json", seed_json(50));
    let children: Vec<_> = (0..4)
        .map(|_| p.cmd(&["run", "ingest"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap())
        .collect();
    let mut ran = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{err}");
        ran += err.lines().filter(|l| l.starts_with("ingest") && l.contains(" ran ")).count();
    }
    assert_eq!(ran, 1, "exactly one run should have done the work");
    let out = p.run(&["run", "ingest", "--verify"]).ok();
    assert_eq!(out.stages(), ["ingest cached"]);
}

#[test]
fn verify_catches_tampering_via_cli() {
    let p = Project::new(TOML);
    p.write("data.json", seed_json(3));
    p.run(&["run", "ingest"]).ok();
    let dir = &trusted_dirs(&p.path().join("artifacts"), "ingest")[0];
    let f = dir.join("qa.parquet");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let out = p.run(&["run", "ingest", "--verify"]);
    assert_eq!(out.code(), 1);
    let err = out.stderr();
    assert_eq!(err.lines().filter(|l| l.starts_with("coltrast:")).count(), 1, "{err}");
    assert!(err.contains("qa.parquet: corrupt artifact: blake3"), "{err}");
}

#[test]
fn gc_removes_unreachable_artifacts() {
    let p = Project::new(TOML);
    p.write("data.json", seed_json(2));
    p.run(&["run", "ingest"]).ok();
    p.write("data.json", seed_json(3));
    p.run(&["run", "ingest"]).ok();
    let arts = p.path().join("artifacts");
    assert_eq!(trusted_dirs(&arts, "ingest").len(), 2);
    let out = p.run(&["gc", "--keep", "1", "--dry-run"]).ok().stdout();
    assert!(out.is_empty(), "{out}");
    let out = p.run(&["gc"]).ok().stdout();
    assert!(out.starts_with("removed "), "{out}");
    assert_eq!(trusted_dirs(&arts, "ingest").len(), 1);
    assert_eq!(p.run(&["run", "ingest"]).ok().stages(), ["ingest cached"]);
}

/// Every bad input gets one line naming file, record and field, and exit 1.
#[test]
fn bad_inputs_get_one_line_and_exit_1() {
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "malformed",
            b"{\"projects\": [\n {\"project_id\": \"a\",, }]}",
            "data.json: document: malformed JSON at line 2, column",
        ),
        (
            "missing field",
            br##"{"projects":[{"project_id":"a","readme_content":"# A","qa_pairs":[{"answer":"x"}]}]}"##,
            "data.json: projects[0].qa_pairs[0]: missing field \"question\"",
        ),
        (
            "wrong type",
            br##"{"projects":[{"project_id":"a","readme_content":42}]}"##,
            "data.json: projects[0].readme_content: expected a string, got a number",
        ),
        (
            "duplicate id",
            br##"{"projects":[{"project_id":"a","readme_content":"x"},{"project_id":"a","readme_content":"y"}]}"##,
            "data.json: projects[1].project_id: duplicate project_id \"a\"",
        ),
        (
            "empty question",
            br##"{"projects":[{"project_id":"a","readme_content":"x","qa_pairs":[{"question":"","answer":"y"}]}]}"##,
            "data.json: projects[0].qa_pairs[0].question: empty question",
        ),
        ("non-utf8", b"{\"projects\":[{\"project_id\":\"a\xff\"}]}", "data.json: line 1, column 30: invalid UTF-8"),
        ("empty dataset", b"{\"projects\":[]}", "data.json: dataset: empty dataset: no projects"),
    ];
    for (what, bytes, expected) in cases {
        let p = Project::new(TOML);
        p.write("data.json", bytes);
        let out = p.run(&["run", "ingest"]);
        assert_eq!(out.code(), 1, "{what}: {}", out.stderr());
        let err = out.stderr();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: one line expected, got:\n{err}");
        assert!(lines[0].starts_with("coltrast: ") && lines[0].contains(expected), "{what}: {err}");
        assert!(trusted_dirs(&p.path().join("artifacts"), "ingest").is_empty(), "{what}");
    }
    // A Q&A naming an unknown project (markdown folder + CSV).
    let p = Project::new("[ingest]\npath = \"docs\"\n");
    p.write("docs/alpha.md", "# Alpha\ntext");
    p.write("docs/qa.csv", "project_id,question,answer\nbeta,What?,x\n");
    let out = p.run(&["run", "ingest"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("project_id \"beta\" names an unknown project"), "{}", out.stderr());
}

#[test]
fn empty_readme_is_a_warning_and_kept() {
    let p = Project::new(TOML);
    p.write("data.json", r#"{"projects":[{"project_id":"a","readme_content":"","qa_pairs":[]}]}"#);
    let out = p.run(&["run", "ingest"]).ok();
    assert!(out.stderr().contains("empty README"), "{}", out.stderr());
    let show = p.run(&["show", "ingest"]).ok().stdout();
    assert!(show.contains("projects.parquet  (1 rows"), "{show}");
}

#[test]
fn bad_settings_get_one_line_and_exit_1() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "[ingest]\npathh = \"x\"\n",
            &[],
            "pipeline.toml: ingest.pathh: unknown field `pathh`, expected one of `path`",
        ),
        (
            "[model]\nthreads = \"x\"\n",
            &[],
            "pipeline.toml: model.threads: invalid type: string \"x\", expected an integer",
        ),
        (TOML, &["--set", "model.threads=-1"], "--set model.threads=-1: model.threads: expected an integer >= 0"),
        (TOML, &["--set", "nope.x=1"], "--set nope.x=1: nope.x: unknown key"),
        (TOML, &["--set", "ingest.format=xml"], "--set ingest.format=xml: ingest.format: unknown variant `xml`"),
    ];
    for (toml, extra, expected) in cases {
        let p = Project::new(toml);
        let mut args = vec!["status"];
        args.extend_from_slice(extra);
        let out = p.run(&args);
        assert_eq!(out.code(), 1, "{expected}: {}", out.stderr());
        assert_eq!(out.stderr().lines().count(), 1, "{}", out.stderr());
        assert!(out.stderr().contains(expected), "expected {expected:?} in {}", out.stderr());
    }
    // Environment variables are a layer too.
    let p = Project::new(TOML);
    let out = Out(p.cmd(&["status"]).env("COLTRAST_INGEST__FORMAT", "yaml").output().unwrap(), "status".into());
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("environment variable COLTRAST_INGEST__FORMAT: ingest.format"), "{}", out.stderr());
}

#[test]
fn cli_usage_errors_exit_1_and_help_exits_0() {
    let p = Project::new(TOML);
    assert_eq!(p.run(&["--help"]).code(), 0);
    assert_eq!(p.run(&["frobnicate"]).code(), 1);
    let out = p.run(&["run", "nosuchstage"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("unknown stage \"nosuchstage\""), "{}", out.stderr());
    let out = p.run(&["show", "ingest"]);
    assert_eq!(out.code(), 1, "show before any run");
}

#[test]
fn missing_dataset_is_a_user_error() {
    let p = Project::new("[ingest]\npath = \"nope.json\"\n");
    let out = p.run(&["run", "ingest"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("nope.json: dataset not found"), "{}", out.stderr());
}

#[test]
fn boolq_ingests_when_shared_data_is_present() {
    let Some(shared) = shared_dir() else {
        eprintln!("skipping: ../shared is absent (BoolQ lives there)");
        return;
    };
    let boolq = shared.join("data/boolq");
    let p = Project::new(&format!("[ingest]\npath = \"{}\"\n", boolq.display()));
    p.run(&["run", "ingest"]).ok();
    let show = p.run(&["show", "ingest"]).ok().stdout();
    assert!(show.contains("projects.parquet  (2939 rows"), "{show}");
    assert!(show.contains("qa.parquet  (3270 rows"), "{show}");
}

/// Without libtorch (what `cargo test -p coltrast` can check; the full hand-over, with coltrast-torch there, is
/// torch/tests/serve.rs's `coltrast_runs_without_libtorch_until_a_libtorch_stage_must_run`): the coltrast
/// binary links no libtorch, and a run whose stages need it, with no coltrast-torch to hand it to, fails in one
/// line naming the missing binary before any stage runs.
#[test]
fn a_libtorch_run_without_coltrast_torch_fails_in_one_line_before_anything_runs() {
    if let Ok(o) = std::process::Command::new("ldd").arg(bin()).output() {
        let libs = String::from_utf8_lossy(&o.stdout);
        let torch = libs.lines().map(|l| l.trim()).filter(|l| l.starts_with("libtorch") || l.starts_with("libc10"));
        assert!(o.status.success() && torch.count() == 0, "coltrast links libtorch:\n{libs}");
    }
    let p = tiny::tiny_project("epochs = 1");
    let o = p.cmd(&["run"]).env("COLTRAST_TORCH_BIN", "/nonexistent/coltrast-torch").output().unwrap();
    let out = Out(o, "run".into());
    assert_eq!(out.code(), 1, "{}", out.stderr());
    assert!(out.stderr().contains("/nonexistent/coltrast-torch: missing"), "{}", out.stderr());
    assert_eq!(out.stderr().lines().count(), 1, "{}", out.stderr());
    assert!(out.stages().is_empty(), "{:?}", out.stages());
    for stage in ["ingest", "chunk"] {
        assert!(trusted_dirs(&p.path().join("artifacts"), stage).is_empty(), "{stage} ran");
    }
}
