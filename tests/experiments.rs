//! `coltrast exp` through the real binary, without libtorch: a bad value fails before anything runs, and every
//! subcommand's help has an example. The sweeps on the tiny random model (which train) are in
//! torch/tests/experiments.rs.

use coltrast_testkit::*;

#[test]
fn a_bad_value_fails_before_anything_runs_with_one_line() {
    let p = Project::new("[ingest]\npath = \"data.json\"\n");
    p.write("data.json", seed_json(2));
    for (set, line) in [
        (
            "chunk.similarity_threshold=0.5,1.5",
            "coltrast: --set chunk.similarity_threshold=1.5: chunk.similarity_threshold: expected a number in [-1, 1], got 1.5\n",
        ),
        ("mine.num_negatives=1,x", "coltrast: --set mine.num_negatives=x: mine.num_negatives: expected an integer, got \"x\"\n"),
    ] {
        let out = p.run(&["exp", "run", "--set", "chunk.strategy=semantic", "--set", set]);
        assert_eq!(out.code(), 1, "{}", out.stderr());
        assert_eq!(out.stderr(), line);
        assert!(!p.path().join("artifacts").exists(), "something ran");
    }
    // show and plot with nothing recorded
    assert!(p.run(&["exp", "show"]).ok().stdout().contains("no experiments recorded yet"));
    let out = p.run(&["exp", "plot", "ndcg@10", "--by", "chunk.similarity_threshold"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr().contains("no experiments recorded yet"), "{}", out.stderr());
}

#[test]
fn every_exp_subcommand_help_has_an_example() {
    let p = Project::new("");
    for sub in ["run", "show", "plot", "diff", "apply", "remove"] {
        let out = p.run(&["exp", sub, "--help"]).ok().stdout();
        assert!(out.contains("Example: coltrast exp"), "exp {sub}: {out}");
    }
    assert!(p.run(&["exp", "--help"]).ok().stdout().contains("Example: coltrast exp run"));
}
