//! # exp: experiments — sweep settings, compare their evals side by side, plot them
//!
//! **What.** `coltrast exp run --set KEY=V1,V2,...` runs the Cartesian product of the values through the
//! normal engine and records one row per experiment; `exp show`, `exp diff`, `exp plot` compare the rows;
//! `exp apply` makes one of them the default run; `exp remove` forgets one. Because artifacts are keyed by
//! content hashes, experiments share every stage they have in common: a sweep of `mine.num_negatives`
//! chunks once and trains once per value. Comparison is a view over what is on disk.
//!
//! **Inputs.** The settings (pipeline.toml < environment < `--set`), each `--set` value typed and checked as
//! `coltrast run --set` checks it, every combination before anything runs ([`sweep`]). The finished stages'
//! manifests, `eval/eval.parquet` and `train/train_log.parquet` ([`run`]).
//!
//! **Outputs.** `artifacts/experiments/experiments.parquet`, one row per experiment, replaced atomically at
//! each append; its schema is documented in [`record`] and the README. An experiment is identified by its
//! resolved settings and every stage's fingerprint, so rerunning a sweep (after Ctrl-C, `kill -9`, or just
//! again) adds no duplicates and runs only what is missing. `coltrast gc` keeps every artifact a recorded
//! experiment references (unless `--experiments ignore`).
//!
//! **Params.** `--set KEY=V1,V2,...` (repeatable; commas inside double quotes stay in the value),
//! `--name PREFIX`.
//!
//! **Example.**
//! ```text
//! coltrast exp run --set mine.num_negatives=1,3,5 --set train.epochs=3,10
//! coltrast exp show --sort coltrast/ndcg@10
//! coltrast exp plot ndcg@10 --by mine.num_negatives -o negatives.png
//! coltrast exp diff num_negatives=1,epochs=3 num_negatives=5,epochs=3
//! coltrast exp apply num_negatives=5,epochs=10
//! ```

pub mod apply;
pub mod plot;
pub mod record;
pub mod report;
pub mod run;
pub mod sweep;
pub mod view;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use run::{Done, RunOptions};
pub use view::{Format, ShowOptions};

use crate::error::Result;
use crate::settings::Settings;

/// `artifacts/experiments/experiments.parquet` of these settings.
pub fn file(settings: &Settings) -> PathBuf {
    record::path(&settings.artifacts_path())
}

/// `exp run`.
pub fn run(config: Option<PathBuf>, sets: &[String], opts: &RunOptions) -> Result<Vec<Done>> {
    run::run(config, sets, opts)
}

/// `exp show`: every recorded experiment, or only `only` (by id) when given.
pub fn show(settings: &Settings, opts: &ShowOptions, only: Option<&[String]>) -> Result<String> {
    let mut records = record::read(&file(settings))?;
    if let Some(ids) = only {
        records.retain(|r| ids.iter().any(|i| i == r.id()));
    }
    view::render_show(&records, opts)
}

/// `exp diff A B`.
pub fn diff(settings: &Settings, a: &str, b: &str, json: bool) -> Result<String> {
    let f = file(settings);
    let records = record::read(&f)?;
    view::render_diff(record::find(&f, &records, a)?, record::find(&f, &records, b)?, json)
}

/// `exp plot METRIC --by KEY [-o FILE]`; the default file is `artifacts/experiments/<metric>-by-<key>.png`.
pub fn plot(settings: &Settings, metric: &str, by: &str, output: Option<PathBuf>) -> Result<(PathBuf, plot::Drawn)> {
    let f = file(settings);
    let records = record::read(&f)?;
    if records.is_empty() {
        return Err(crate::Error::Usage(format!(
            "{}: no experiments recorded yet; run `coltrast exp run` first",
            f.display()
        )));
    }
    let out = output.unwrap_or_else(|| {
        let safe = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '_' { c } else { '_' })
                .collect::<String>()
        };
        f.with_file_name(format!("{}-by-{}.png", safe(metric), safe(by)))
    });
    let drawn = plot::plot(&records, metric, by, &out)?;
    Ok((out, drawn))
}

/// `exp apply NAME`: the experiment's settings into `config` (pipeline.toml).
pub fn apply(settings: &Settings, config: &Path, name: &str) -> Result<Vec<apply::Change>> {
    let f = file(settings);
    let records = record::read(&f)?;
    apply::apply(config, record::find(&f, &records, name)?)
}

/// `exp remove NAME...`.
pub fn remove(settings: &Settings, names: &[String]) -> Result<Vec<String>> {
    record::remove(&file(settings), names)
}

/// `(stage, fingerprint)` of every artifact a recorded experiment references, for `coltrast gc`.
pub fn pinned(settings: &Settings) -> Result<BTreeSet<(String, String)>> {
    Ok(record::read(&file(settings))?.iter().flat_map(|r| r.fingerprints()).collect())
}
