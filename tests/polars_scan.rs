//! The Parquet artifacts are a public interface: they must open in polars (lazy scan) with the documented
//! schema, as a user's own analytics would.

use coltrast_testkit::*;
use polars::prelude::*;

#[test]
fn ingest_artifacts_scan_in_polars() {
    let p = Project::new("[ingest]\npath = \"data.json\"\n");
    p.write("data.json", seed_json(3));
    p.run(&["run", "ingest"]).ok();
    let dir = trusted_dirs(&p.path().join("artifacts"), "ingest").remove(0);

    let path = PlRefPath::new(dir.join("projects.parquet").to_str().unwrap());
    let projects = LazyFrame::scan_parquet(path, ScanArgsParquet::default())
        .unwrap()
        .select([col("project_id"), col("title"), col("n_chars")])
        .sort(["project_id"], SortMultipleOptions::default())
        .collect()
        .unwrap();
    assert_eq!(projects.height(), 3);
    let t = projects.column("title").unwrap().str().unwrap();
    let titles: Vec<Option<&str>> = (0..t.len()).map(|i| t.get(i)).collect();
    assert_eq!(titles, [Some("Project 0"), Some("Project 1"), Some("Project 2")]);
    assert_eq!(projects.column("n_chars").unwrap().dtype(), &DataType::Int64);

    let path = PlRefPath::new(dir.join("qa.parquet").to_str().unwrap());
    let per_project = LazyFrame::scan_parquet(path, ScanArgsParquet::default())
        .unwrap()
        .group_by([col("project_id")])
        .agg([col("question").count().alias("n"), col("answer").null_count().alias("null_answers")])
        .sort(["project_id"], SortMultipleOptions::default())
        .collect()
        .unwrap();
    assert_eq!(per_project.height(), 3);
    let c = per_project.column("n").unwrap().u32().unwrap();
    let n: Vec<Option<u32>> = (0..c.len()).map(|i| c.get(i)).collect();
    assert_eq!(n, [Some(1), Some(1), Some(1)]);
}
