//! `coltrast report`: analytics over the current artifacts with polars' lazy API — the same Parquet files a
//! user would load into polars, pandas or duckdb.
//!
//! Prints: chunks per project; the token-length distribution of chunks; the share of positives taken from the
//! README (a chunk) versus the answer fallback; negatives per query; training's best epoch (lowest mean
//! validation loss in `train_log.parquet`); eval by system and level; and the recorded experiments
//! ([`crate::exp::report`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::artifacts::{self, StageId};
use crate::engine::Pipeline;
use crate::error::{Error, Result};
use crate::settings::Settings;

fn scan(path: &Path) -> Result<LazyFrame> {
    let s = path.to_str().ok_or_else(|| Error::Usage(format!("{}: not a UTF-8 path", path.display())))?;
    LazyFrame::scan_parquet(PlRefPath::new(s), ScanArgsParquet::default()).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        stage: "report".into(),
        message: e.to_string(),
    })
}

fn collect(lf: LazyFrame, path: &Path) -> Result<DataFrame> {
    lf.collect().map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        stage: "report".into(),
        message: e.to_string(),
    })
}

/// The artifact dir of a stage for the current settings (or its last run), if any.
fn dir(p: &Pipeline<'_, Settings>, stage: StageId) -> Option<PathBuf> {
    p.show(stage.as_str()).ok().map(|(d, _, _)| d)
}

/// The report as text (Markdown-ish tables from polars' formatter).
pub fn report(settings: &Settings) -> Result<String> {
    if std::env::var_os("POLARS_FMT_MAX_ROWS").is_none() {
        // Show whole tables (the eval table has up to 30 rows).
        std::env::set_var("POLARS_FMT_MAX_ROWS", "60");
    }
    let p = Pipeline::of(settings)?;
    let mut out = String::new();
    let fmt = |out: &mut String, title: &str, df: &DataFrame| {
        let _ = writeln!(out, "## {title}\n{df}\n");
    };
    if let Some(d) = dir(&p, StageId::Chunk) {
        let f = d.join(crate::artifacts::chunks::CHUNKS);
        let per = collect(
            scan(&f)?
                .group_by([col("project_id")])
                .agg([len().alias("chunks"), col("n_tokens").mean().alias("mean_tokens")])
                .sort(["project_id"], SortMultipleOptions::default()),
            &f,
        )?;
        fmt(&mut out, "Chunks per project", &per);
        let dist = collect(
            scan(&f)?.select([
                col("n_tokens").min().alias("min"),
                col("n_tokens").quantile(lit(0.25), QuantileMethod::Nearest).alias("p25"),
                col("n_tokens").median().alias("median"),
                col("n_tokens").quantile(lit(0.9), QuantileMethod::Nearest).alias("p90"),
                col("n_tokens").max().alias("max"),
                col("n_tokens").mean().alias("mean"),
            ]),
            &f,
        )?;
        fmt(&mut out, "Chunk length in tokens", &dist);
    } else {
        out.push_str("(no chunk artifact yet)\n\n");
    }
    if let Some(d) = dir(&p, StageId::Mine) {
        let f = d.join(crate::artifacts::pairs::PAIRS);
        let share = collect(
            scan(&f)?
                .group_by([col("positive_source")])
                .agg([len().alias("pairs")])
                .with_column(
                    (col("pairs").cast(DataType::Float64) / col("pairs").sum().cast(DataType::Float64)).alias("share"),
                )
                .sort(["positive_source"], SortMultipleOptions::default()),
            &f,
        )?;
        fmt(&mut out, "Positives: README chunk vs answer fallback", &share);
        let negs = collect(
            scan(&f)?.select([col("negative_chunk_ids").list().len().alias("n")]).select([
                col("n").min().alias("min"),
                col("n").mean().alias("mean"),
                col("n").max().alias("max"),
            ]),
            &f,
        )?;
        fmt(&mut out, "Negatives per query", &negs);
    }
    if let Some(d) = dir(&p, StageId::Train) {
        let f = d.join(crate::artifacts::train::LOG);
        let best = collect(
            scan(&f)?
                .filter(col("split").eq(lit("val")))
                .group_by([col("epoch")])
                .agg([col("loss").mean().alias("val_loss")])
                .sort(["val_loss"], SortMultipleOptions::default())
                .limit(1),
            &f,
        )?;
        fmt(&mut out, "Training: best epoch (lowest validation loss)", &best);
    }
    if let Some(d) = dir(&p, StageId::Eval) {
        let f = d.join(artifacts::eval::EVAL);
        let ev = collect(
            scan(&f)?
                .filter(
                    col("metric")
                        .eq(lit("recall@1"))
                        .or(col("metric").eq(lit("mrr@10")))
                        .or(col("metric").eq(lit("ndcg@10"))),
                )
                .sort(["level", "system", "metric"], SortMultipleOptions::default())
                .select([col("level"), col("system"), col("metric"), col("value")]),
            &f,
        )?;
        fmt(&mut out, "Eval by system and level", &ev);
        // Each system's document-level nDCG@10 against the untuned whole-document baseline.
        let doc_ndcg = scan(&f)?.filter(col("level").eq(lit("document")).and(col("metric").eq(lit("ndcg@10"))));
        let base = collect(doc_ndcg.clone().filter(col("system").eq(lit(artifacts::eval::BASELINE))), &f)?;
        let baseline = base.column("value").ok().and_then(|c| c.f64().ok().and_then(|v| v.get(0)));
        if let Some(b) = baseline {
            let gains = collect(
                doc_ndcg
                    .select([
                        col("system"),
                        col("value").alias("ndcg@10"),
                        (col("value") - lit(b)).alias("gain_vs_base_whole"),
                    ])
                    .sort(["ndcg@10"], SortMultipleOptions::default().with_order_descending(true)),
                &f,
            )?;
            fmt(&mut out, "Document nDCG@10: gain of each system over base-whole", &gains);
        }
    }
    if let Some(section) = crate::exp::report::section(&settings.artifacts_path())? {
        out.push_str(&section);
    }
    Ok(out)
}
