//! The "Experiments" section of `coltrast report`: polars over experiments.parquet, as a user would query it.
//! Each experiment's best system score (document nDCG@10, the best of the non-baseline systems), the
//! whole-document baseline and the gain, with the settings that differ, best first.

use std::fmt::Write as _;
use std::path::Path;

use polars::prelude::*;

use super::record::{self, METRIC, SETTINGS};
use crate::artifacts::eval::BASELINE;
use crate::error::{Error, Result};

fn polars_err(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| Error::Corrupt { path: path.to_path_buf(), stage: "exp".into(), message: e.to_string() }
}

/// The section as Markdown-ish text, or `None` when no experiment is recorded.
pub fn section(artifacts: &Path) -> Result<Option<String>> {
    let path = record::path(artifacts);
    if !path.is_file() {
        return Ok(None);
    }
    let s = path.to_str().ok_or_else(|| Error::Usage(format!("{}: not a UTF-8 path", path.display())))?;
    let err = polars_err(&path);
    let df = LazyFrame::scan_parquet(PlRefPath::new(s), ScanArgsParquet::default())
        .map_err(&err)?
        .collect()
        .map_err(&err)?;
    let names: Vec<String> = df.get_column_names().iter().map(|c| c.to_string()).collect();
    let doc_ndcg: Vec<&String> =
        names.iter().filter(|c| c.starts_with(METRIC) && c.ends_with("/document/ndcg@10")).collect();
    let systems: Vec<&String> =
        doc_ndcg.iter().copied().filter(|c| !c.contains(&format!("{METRIC}{BASELINE}/"))).collect();
    let baseline = format!("{METRIC}{BASELINE}/document/ndcg@10");
    // settings that differ between experiments
    let mut varying = Vec::new();
    for c in names.iter().filter(|c| c.starts_with(SETTINGS)) {
        let n = df.column(c).map_err(&err)?.as_materialized_series().n_unique().map_err(&err)?;
        if n > 1 {
            varying.push(c.clone());
        }
    }
    let mut select: Vec<Expr> = vec![col(record::NAME)];
    select.extend(varying.iter().map(|c| col(c.as_str()).alias(c.strip_prefix(SETTINGS).unwrap_or(c))));
    let mut sort_by = None;
    if !systems.is_empty() {
        let best = polars::lazy::dsl::max_horizontal(systems.iter().map(|c| col(c.as_str())).collect::<Vec<_>>())
            .map_err(&err)?;
        select.push(best.clone().alias("best nDCG@10"));
        sort_by = Some("best nDCG@10");
        if names.contains(&baseline) {
            select.push(col(baseline.as_str()).alias("base-whole"));
            select.push((best - col(baseline.as_str())).alias("gain"));
        }
    }
    let mut lf = df.lazy().select(select);
    if let Some(by) = sort_by {
        lf = lf.sort([by], SortMultipleOptions::default().with_order_descending(true).with_nulls_last(true));
    }
    let table = lf.collect().map_err(&err)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Experiments: {} recorded ({}), best system's document nDCG@10\n{table}\n",
        table.height(),
        path.display()
    );
    Ok(Some(out))
}
