//! `exp show` and `exp diff`: which columns to show (settings that differ, chosen metrics), how to name a
//! metric on the command line, and the table, JSON and CSV renderings.
//!
//! A metric is named `[SYSTEM/][LEVEL/]METRIC`: `ndcg@10` is document-level nDCG@10 of every eval system,
//! `coltrast/ndcg@10` one system's, `chunk/recall@1` every system's chunk-level recall@1. METRIC is one of
//! recall@1, recall@5, recall@10, mrr@10, ndcg@10 (`R@1`, `nDCG@10`, `MRR@10` also work). Any other column of
//! experiments.parquet can be named as it is (`stat.train.best_epoch`, `run_time_s`), or a stat by its last
//! part when that is unambiguous (`best_epoch`, `val_loss_best`, `chunks`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::record::{Cell, Record, METRIC, SETTINGS, STAGE, STAT};
use crate::artifacts::eval::SYSTEMS;
use crate::error::{Error, Result};
use crate::metrics::METRIC_NAMES;

/// Which way a column improves (for marking the best value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    Neither,
}

/// A value column of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Col {
    /// The column of experiments.parquet.
    pub key: String,
    /// The header's upper line (the eval system), shared by neighbouring columns.
    pub group: String,
    /// The header's lower line.
    pub label: String,
    pub better: Better,
}

/// The default metrics: document-level nDCG@10 and R@1 of every eval system.
pub const DEFAULT_METRICS: [&str; 2] = ["ndcg@10", "recall@1"];

fn system_rank(sys: &str) -> (usize, String) {
    (SYSTEMS.iter().position(|s| *s == sys).unwrap_or(SYSTEMS.len()), sys.to_string())
}

/// `R@1` → `recall@1`, `nDCG@10` → `ndcg@10`.
pub fn canonical_metric(m: &str) -> Option<&'static str> {
    let m = m.trim().to_ascii_lowercase();
    let m = match m.strip_prefix("r@") {
        Some(k) => format!("recall@{k}"),
        None => m,
    };
    METRIC_NAMES.iter().copied().find(|n| *n == m)
}

/// `recall@1` → `R@1`, as eval.md writes it.
pub fn pretty_metric(m: &str) -> String {
    if let Some(k) = m.strip_prefix("recall@") {
        format!("R@{k}")
    } else if let Some(k) = m.strip_prefix("ndcg@") {
        format!("nDCG@{k}")
    } else if let Some(k) = m.strip_prefix("mrr@") {
        format!("MRR@{k}")
    } else {
        m.to_string()
    }
}

fn better_of(key: &str) -> Better {
    if key.starts_with(METRIC) {
        Better::Higher
    } else if key.contains("loss") || key.ends_with("time_s") {
        Better::Lower
    } else {
        Better::Neither
    }
}

fn plain_col(key: &str) -> Col {
    let label = key.strip_prefix(STAT).unwrap_or(key).to_string();
    Col { key: key.to_string(), group: String::new(), label, better: better_of(key) }
}

/// `metric.<system>/<level>/<metric>` split.
pub fn metric_parts(key: &str) -> Option<(&str, &str, &str)> {
    let mut it = key.strip_prefix(METRIC)?.splitn(3, '/');
    Some((it.next()?, it.next()?, it.next()?))
}

fn metric_col(key: &str) -> Col {
    match metric_parts(key) {
        Some((sys, level, m)) => {
            let label = if level == "document" { pretty_metric(m) } else { format!("{level} {}", pretty_metric(m)) };
            Col { key: key.to_string(), group: sys.to_string(), label, better: Better::Higher }
        }
        None => plain_col(key),
    }
}

/// Every column name the records have.
fn available(records: &[Record]) -> BTreeSet<&str> {
    records.iter().flat_map(|r| r.cells.keys().map(|k| k.as_str())).collect()
}

/// The columns a metric name stands for, systems in eval's order.
pub fn metric_columns(records: &[Record], spec: &str) -> Result<Vec<Col>> {
    let cols = available(records);
    let spec = spec.trim();
    if cols.contains(spec) {
        return Ok(vec![if spec.starts_with(METRIC) { metric_col(spec) } else { plain_col(spec) }]);
    }
    let parts: Vec<&str> = spec.split('/').collect();
    let Some(metric) = parts.last().and_then(|m| canonical_metric(m)) else {
        // A stat by its last part (`best_epoch`) or without its prefix (`train.best_epoch`).
        let matches: Vec<&&str> = cols
            .iter()
            .filter(|c| c.strip_prefix(STAT).is_some_and(|rest| rest == spec || rest.ends_with(&format!(".{spec}"))))
            .collect();
        return match matches.as_slice() {
            [one] => Ok(vec![plain_col(one)]),
            [] => Err(Error::Usage(format!(
                "no recorded metric or column {spec:?}; name a metric as [SYSTEM/][LEVEL/]METRIC (METRIC: {}; e.g. \
                 coltrast/ndcg@10), or a column of experiments.parquet (e.g. stat.train.best_epoch)",
                METRIC_NAMES.join(", ")
            ))),
            many => Err(Error::Usage(format!(
                "{spec:?} is ambiguous: {}",
                many.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
            ))),
        };
    };
    let (system, level) = match parts.as_slice() {
        [_] => (None, "document"),
        [a, _] if *a == "chunk" || *a == "document" => (None, *a),
        [sys, _] => (Some(*sys), "document"),
        [sys, level, _] => (Some(*sys), *level),
        _ => return Err(Error::Usage(format!("{spec:?}: expected [SYSTEM/][LEVEL/]METRIC"))),
    };
    let mut found: Vec<(&str, &str)> = cols
        .iter()
        .filter_map(|c| metric_parts(c).map(|(s, l, m)| (*c, s, l, m)))
        .filter(|(_, s, l, m)| *m == metric && *l == level && system.is_none_or(|want| want == *s))
        .map(|(c, s, _, _)| (c, s))
        .collect();
    found.sort_by_key(|(_, s)| system_rank(s));
    if found.is_empty() {
        let systems: BTreeSet<&str> = cols.iter().filter_map(|c| metric_parts(c).map(|p| p.0)).collect();
        return Err(Error::Usage(format!(
            "no recorded metric matches {spec:?} (systems recorded: {})",
            if systems.is_empty() { "none".to_string() } else { systems.into_iter().collect::<Vec<_>>().join(", ") }
        )));
    }
    Ok(found.into_iter().map(|(c, _)| metric_col(c)).collect())
}

/// The value columns for `--metric` specs: metric columns grouped by system (each system's metrics side by
/// side, in the order given), then any other columns.
pub fn value_columns(records: &[Record], specs: &[String]) -> Result<Vec<Col>> {
    let defaults: Vec<String> = DEFAULT_METRICS.iter().map(|s| s.to_string()).collect();
    let specs = if specs.is_empty() { &defaults } else { specs };
    let mut per_spec = Vec::new();
    for spec in specs {
        per_spec.push(metric_columns(records, spec)?);
    }
    let mut systems: Vec<String> =
        per_spec.iter().flatten().filter(|c| !c.group.is_empty()).map(|c| c.group.clone()).collect();
    systems.sort_by_key(|s| system_rank(s));
    systems.dedup();
    let mut out: Vec<Col> = Vec::new();
    for sys in &systems {
        for cols in &per_spec {
            out.extend(cols.iter().filter(|c| &c.group == sys).cloned());
        }
    }
    out.extend(per_spec.iter().flatten().filter(|c| c.group.is_empty()).cloned());
    let mut seen = BTreeSet::new();
    out.retain(|c| seen.insert(c.key.clone()));
    Ok(out)
}

/// The settings to show as columns: every key set on an `exp run` command line, then every setting whose
/// value differs between the experiments.
pub fn setting_columns(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for r in records {
        for k in r.params() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let all: BTreeSet<&str> = records.iter().flat_map(|r| r.settings().into_keys()).collect();
    for k in all {
        let values: BTreeSet<String> =
            records.iter().map(|r| r.setting(k).map(|c| c.to_string()).unwrap_or_default()).collect();
        if values.len() > 1 && !keys.iter().any(|x| x == k) {
            keys.push(k.to_string());
        }
    }
    keys
}

/// A value as the table shows it.
pub fn format_value(key: &str, cell: &Cell) -> String {
    match cell {
        Cell::Float(x) if key.starts_with(METRIC) => format!("{x:.3}"),
        Cell::Float(x) if x.abs() >= 1000.0 => format!("{x:.1}"),
        Cell::Float(x) => format!("{x:.4}"),
        other => other.to_string(),
    }
}

/// For each column, the rows holding its best value (as displayed, so ties show as ties).
fn best_rows(records: &[&Record], cols: &[Col]) -> Vec<BTreeSet<usize>> {
    cols.iter()
        .map(|c| {
            let shown: Vec<Option<(f64, String)>> = records
                .iter()
                .map(|r| r.get(&c.key).and_then(|v| v.as_f64().map(|x| (x, format_value(&c.key, v)))))
                .collect();
            let pick = match c.better {
                Better::Higher => {
                    shown.iter().flatten().map(|x| x.0).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.max(x))))
                }
                Better::Lower => {
                    shown.iter().flatten().map(|x| x.0).fold(None, |a: Option<f64>, x| Some(a.map_or(x, |a| a.min(x))))
                }
                Better::Neither => None,
            };
            let Some(best) = pick else { return BTreeSet::new() };
            let best_text = shown.iter().flatten().find(|x| x.0 == best).map(|x| x.1.clone()).unwrap_or_default();
            // marking every row is no information
            let marked: BTreeSet<usize> = shown
                .iter()
                .enumerate()
                .filter(|(_, x)| x.as_ref().is_some_and(|x| x.1 == best_text))
                .map(|(i, _)| i)
                .collect();
            if marked.len() == records.len() && records.len() > 1 {
                BTreeSet::new()
            } else {
                marked
            }
        })
        .collect()
}

/// How `exp show` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
    Csv,
}

#[derive(Debug, Clone, Default)]
pub struct ShowOptions {
    pub metrics: Vec<String>,
    pub sort: Option<String>,
    pub format: Format,
}

/// Order the records by a setting (ascending) or a value column (best first).
fn sort_records(records: &mut [&Record], all: &[Record], spec: &str) -> Result<()> {
    let key = spec.strip_prefix(SETTINGS).unwrap_or(spec);
    if all.iter().any(|r| r.setting(key).is_some()) {
        let numeric = records.iter().all(|r| r.setting(key).is_none_or(|c| c.as_f64().is_some()));
        records.sort_by(|a, b| {
            let (x, y) = (a.setting(key), b.setting(key));
            if numeric {
                let f = |c: Option<&Cell>| c.and_then(Cell::as_f64).unwrap_or(f64::INFINITY);
                f(x).total_cmp(&f(y))
            } else {
                x.map(|c| c.to_string()).cmp(&y.map(|c| c.to_string()))
            }
        });
        return Ok(());
    }
    let cols = metric_columns(all, spec)?;
    let [col] = cols.as_slice() else {
        let names: Vec<&str> = cols.iter().map(|c| c.key.as_str()).collect();
        return Err(Error::Usage(format!(
            "--sort {spec}: matches {} columns ({}); name one system, e.g. --sort coltrast/{spec}",
            cols.len(),
            names.join(", ")
        )));
    };
    let sign = if col.better == Better::Higher { -1.0 } else { 1.0 };
    records.sort_by(|a, b| {
        let f = |r: &Record| r.number(&col.key).map(|x| sign * x).unwrap_or(f64::INFINITY);
        f(a).total_cmp(&f(b))
    });
    Ok(())
}

/// `exp show` as text, JSON or CSV.
pub fn render_show(records: &[Record], opts: &ShowOptions) -> Result<String> {
    if records.is_empty() {
        return Ok(match opts.format {
            Format::Json => "{\"experiments\": []}\n".into(),
            Format::Csv => "name\n".into(),
            Format::Table => {
                "no experiments recorded yet; try `coltrast exp run --set mine.num_negatives=1,3`\n".into()
            }
        });
    }
    let settings = setting_columns(records);
    let cols = value_columns(records, &opts.metrics)?;
    let mut rows: Vec<&Record> = records.iter().collect();
    if let Some(spec) = &opts.sort {
        sort_records(&mut rows, records, spec)?;
    }
    let best = best_rows(&rows, &cols);
    match opts.format {
        Format::Json => {
            let exps: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    let s: serde_json::Map<String, serde_json::Value> = settings
                        .iter()
                        .map(|k| (k.clone(), r.setting(k).map(Cell::to_json).unwrap_or(serde_json::Value::Null)))
                        .collect();
                    let v: serde_json::Map<String, serde_json::Value> = cols
                        .iter()
                        .map(|c| (c.key.clone(), r.get(&c.key).map(Cell::to_json).unwrap_or(serde_json::Value::Null)))
                        .collect();
                    serde_json::json!({"name": r.name(), "experiment_id": r.id(), "settings": s, "values": v})
                })
                .collect();
            let best: serde_json::Map<String, serde_json::Value> = cols
                .iter()
                .zip(&best)
                .filter(|(_, b)| !b.is_empty())
                .map(|(c, b)| (c.key.clone(), b.iter().map(|&i| rows[i].name()).collect::<Vec<_>>().into()))
                .collect();
            let text = serde_json::to_string_pretty(&serde_json::json!({"experiments": exps, "best": best}))
                .map_err(Error::internal)?;
            Ok(text + "\n")
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let header: Vec<&str> = ["name"]
                .into_iter()
                .chain(settings.iter().map(|s| s.as_str()))
                .chain(cols.iter().map(|c| c.key.as_str()))
                .collect();
            w.write_record(&header).map_err(Error::internal)?;
            for r in &rows {
                let mut line = vec![r.name().to_string()];
                line.extend(settings.iter().map(|k| r.setting(k).map(|c| c.to_string()).unwrap_or_default()));
                line.extend(cols.iter().map(|c| r.get(&c.key).map(|c| c.to_string()).unwrap_or_default()));
                w.write_record(&line).map_err(Error::internal)?;
            }
            let bytes = w.into_inner().map_err(Error::internal)?;
            String::from_utf8(bytes).map_err(Error::internal)
        }
        Format::Table => {
            let mut t = TextTable::default();
            t.add_left("", "name");
            for k in &settings {
                t.add_left("", k);
            }
            for c in &cols {
                t.add_right(&c.group, &c.label);
            }
            let mut any_best = false;
            for (i, r) in rows.iter().enumerate() {
                let mut line = vec![r.name().to_string()];
                line.extend(settings.iter().map(|k| r.setting(k).map(|c| c.to_string()).unwrap_or_else(|| "-".into())));
                for (c, b) in cols.iter().zip(&best) {
                    let v = r.get(&c.key).map(|v| format_value(&c.key, v)).unwrap_or_else(|| "-".into());
                    let mark = b.contains(&i);
                    any_best |= mark;
                    line.push(if mark { format!("{v}*") } else { format!("{v} ") });
                }
                t.rows.push(line);
            }
            let mut out = t.render();
            let mut notes = vec![format!("{} experiments", rows.len())];
            if cols.iter().all(|c| metric_parts(&c.key).is_some_and(|p| p.1 == "document")) {
                notes.push("document-level metrics".into());
            }
            if any_best {
                notes.push("* best in its column".into());
            }
            let _ = writeln!(out, "{}", notes.join("; "));
            Ok(out)
        }
    }
}

/// A plain-text table with a two-line header (group over label); the group spans neighbouring columns.
#[derive(Debug, Default)]
struct TextTable {
    groups: Vec<String>,
    labels: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl TextTable {
    fn add_left(&mut self, group: &str, label: &str) {
        self.groups.push(group.into());
        self.labels.push(label.into());
        self.right.push(false);
    }
    fn add_right(&mut self, group: &str, label: &str) {
        self.groups.push(group.into());
        self.labels.push(label.into());
        self.right.push(true);
    }
    fn render(&self) -> String {
        let n = self.labels.len();
        let w = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = (0..n)
            .map(|j| {
                self.rows
                    .iter()
                    .map(|r| w(&r[j]))
                    .chain([w(&self.labels[j]) + usize::from(self.right[j])])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // spans of equal, non-empty groups
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let mut j = 0;
        while j < n {
            let mut k = j + 1;
            while k < n && !self.groups[j].is_empty() && self.groups[k] == self.groups[j] {
                k += 1;
            }
            spans.push((j, k));
            j = k;
        }
        for &(a, b) in &spans {
            let span_w: usize = widths[a..b].iter().sum::<usize>() + 2 * (b - a - 1);
            let need = w(&self.groups[a]);
            if need > span_w {
                widths[b - 1] += need - span_w;
            }
        }
        let pad = |s: &str, width: usize, right: bool| {
            let fill = " ".repeat(width.saturating_sub(w(s)));
            if right {
                format!("{fill}{s}")
            } else {
                format!("{s}{fill}")
            }
        };
        let mut out = String::new();
        if self.groups.iter().any(|g| !g.is_empty()) {
            let mut line = Vec::new();
            for &(a, b) in &spans {
                let span_w: usize = widths[a..b].iter().sum::<usize>() + 2 * (b - a - 1);
                line.push(pad(&self.groups[a], span_w, false));
            }
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        let header: Vec<String> = (0..n)
            .map(|j| {
                if self.right[j] {
                    pad(&format!("{} ", self.labels[j]), widths[j], true)
                } else {
                    pad(&self.labels[j], widths[j], false)
                }
            })
            .collect();
        let _ = writeln!(out, "{}", header.join("  ").trim_end());
        let total: usize = widths.iter().sum::<usize>() + 2 * n.saturating_sub(1);
        let _ = writeln!(out, "{}", "-".repeat(total));
        for r in &self.rows {
            let line: Vec<String> = (0..n).map(|j| pad(&r[j], widths[j], self.right[j])).collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
        out
    }
}

/// `exp diff A B`: the settings that differ, every metric with B − A, the stages' fingerprints (which
/// artifacts the two share) and the stats that differ.
pub fn render_diff(a: &Record, b: &Record, json: bool) -> Result<String> {
    let text = |r: &Record, k: &str| r.get(k).map(|c| c.to_string());
    let pair = [a, b];
    let settings: Vec<String> = {
        let keys: BTreeSet<String> = pair.iter().flat_map(|r| r.settings().into_keys().map(String::from)).collect();
        keys.into_iter()
            .filter(|k| a.setting(k).map(|c| c.to_string()) != b.setting(k).map(|c| c.to_string()))
            .collect()
    };
    let mut metrics: Vec<String> = pair
        .iter()
        .flat_map(|r| r.cells.keys())
        .filter(|k| k.starts_with(METRIC))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    metrics.sort_by_key(|k| {
        let (s, l, m) = metric_parts(k).unwrap_or(("", "", ""));
        (l.to_string(), METRIC_NAMES.iter().position(|x| *x == m), system_rank(s))
    });
    let stages: Vec<String> = crate::artifacts::StageId::ALL.iter().map(|s| s.as_str().to_string()).collect();
    let fp = |r: &Record, s: &str| text(r, &format!("{STAGE}{s}.fingerprint"));
    let wall = |r: &Record, s: &str| r.number(&format!("{STAGE}{s}.wall_time_s"));
    let stats: Vec<String> = pair
        .iter()
        .flat_map(|r| r.cells.keys())
        .filter(|k| k.starts_with(STAT) || k.starts_with(super::record::LOSS))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| text(a, k) != text(b, k))
        .collect();
    if json {
        let j = |r: &Record, k: &str| r.get(k).map(Cell::to_json).unwrap_or(serde_json::Value::Null);
        let v = serde_json::json!({
            "a": a.name(),
            "b": b.name(),
            "settings": settings.iter().map(|k| serde_json::json!({"key": k, "a": j(a, &format!("{SETTINGS}{k}")), "b": j(b, &format!("{SETTINGS}{k}"))})).collect::<Vec<_>>(),
            "metrics": metrics.iter().map(|k| serde_json::json!({"column": k, "a": j(a, k), "b": j(b, k),
                "delta": match (a.number(k), b.number(k)) { (Some(x), Some(y)) => serde_json::json!(y - x), _ => serde_json::Value::Null }})).collect::<Vec<_>>(),
            "stages": stages.iter().map(|s| serde_json::json!({"stage": s, "a": fp(a, s), "b": fp(b, s), "shared": fp(a, s).is_some() && fp(a, s) == fp(b, s)})).collect::<Vec<_>>(),
            "stats": stats.iter().map(|k| serde_json::json!({"column": k, "a": j(a, k), "b": j(b, k)})).collect::<Vec<_>>(),
        });
        return Ok(serde_json::to_string_pretty(&v).map_err(Error::internal)? + "\n");
    }
    let mut t = TextTable::default();
    t.add_left("", "");
    t.add_right("", &format!("A: {}", a.name()));
    t.add_right("", &format!("B: {}", b.name()));
    t.add_right("", "B - A");
    let section = |t: &mut TextTable, title: &str| {
        t.rows.push(vec![title.to_string(), String::new(), String::new(), String::new()])
    };
    section(&mut t, "settings that differ");
    if settings.is_empty() {
        t.rows.push(vec!["  (none)".into(), String::new(), String::new(), String::new()]);
    }
    for k in &settings {
        let s = |r: &Record| r.setting(k).map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        t.rows.push(vec![format!("  {k}"), s(a), s(b), String::new()]);
    }
    section(&mut t, "metrics");
    for k in &metrics {
        let (sys, level, m) = metric_parts(k).unwrap_or(("", "", k));
        let v = |r: &Record| r.number(k).map(|x| format!("{x:.3}")).unwrap_or_else(|| "-".into());
        let d = match (a.number(k), b.number(k)) {
            (Some(x), Some(y)) => format!("{:+.3}", y - x),
            _ => String::new(),
        };
        t.rows.push(vec![format!("  {sys} {level} {}", pretty_metric(m)), v(a), v(b), d]);
    }
    section(&mut t, "stages (fingerprint, wall time when it ran)");
    for s in &stages {
        let cell = |r: &Record| match (fp(r, s), wall(r, s)) {
            (Some(f), Some(w)) => format!("{} {:>7.1} s", &f[..f.len().min(12)], w),
            (Some(f), None) => f[..f.len().min(12)].to_string(),
            _ => "-".into(),
        };
        let shared = if fp(a, s).is_some() && fp(a, s) == fp(b, s) { "shared" } else { "" };
        t.rows.push(vec![format!("  {s}"), cell(a), cell(b), shared.into()]);
    }
    if !stats.is_empty() {
        section(&mut t, "stats that differ");
        for k in &stats {
            let v = |r: &Record| r.get(k).map(|c| format_value(k, c)).unwrap_or_else(|| "-".into());
            let d = match (a.get(k), b.get(k)) {
                (Some(Cell::Int(x)), Some(Cell::Int(y))) => format!("{:+}", y - x),
                (Some(Cell::Float(x)), Some(Cell::Float(y))) => format!("{:+.4}", y - x),
                _ => String::new(),
            };
            t.rows.push(vec![format!("  {}", k.strip_prefix(STAT).unwrap_or(k)), v(a), v(b), d]);
        }
    }
    Ok(t.render())
}

/// Keys set on the command line of at least one experiment, for messages.
pub fn swept_keys(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for r in records {
        for k in r.params() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exp::record::{ID, NAME, PARAMS};

    fn rec(name: &str, t: f64, neg: i64, coltrast: f64, base: f64) -> Record {
        let mut r = Record::default();
        r.set(ID, Cell::Str(format!("id-{name}")));
        r.set(NAME, Cell::Str(name.into()));
        r.set(PARAMS, Cell::StrList(vec!["chunk.similarity_threshold".into()]));
        r.set("settings.chunk.similarity_threshold", Cell::Float(t));
        r.set("settings.mine.num_negatives", Cell::Int(neg));
        r.set("settings.train.seed", Cell::Int(42));
        r.set("metric.base-whole/document/ndcg@10", Cell::Float(base));
        r.set("metric.coltrast/document/ndcg@10", Cell::Float(coltrast));
        r.set("metric.coltrast/document/recall@1", Cell::Float(coltrast - 0.1));
        r.set("metric.coltrast/chunk/ndcg@10", Cell::Float(coltrast - 0.2));
        r.set("stat.train.best_epoch", Cell::Int(2));
        r.set("stat.train.val_loss_best", Cell::Float(coltrast));
        r.set("stage.ingest.fingerprint", Cell::Str("aaaaaaaaaaaaaaaa".into()));
        r.set("stage.chunk.fingerprint", Cell::Str(format!("chunk-{t}-------")));
        r
    }

    fn three() -> Vec<Record> {
        vec![rec("t=0.5", 0.5, 3, 0.80, 0.7), rec("t=0.7", 0.7, 3, 0.86, 0.7), rec("t=0.9", 0.9, 1, 0.83, 0.7)]
    }

    #[test]
    fn metric_names_resolve_to_columns() {
        let r = three();
        let keys = |spec: &str| metric_columns(&r, spec).unwrap().into_iter().map(|c| c.key).collect::<Vec<_>>();
        assert_eq!(keys("ndcg@10"), ["metric.base-whole/document/ndcg@10", "metric.coltrast/document/ndcg@10"]);
        assert_eq!(keys("nDCG@10"), keys("ndcg@10"));
        assert_eq!(keys("coltrast/R@1"), ["metric.coltrast/document/recall@1"]);
        assert_eq!(keys("chunk/ndcg@10"), ["metric.coltrast/chunk/ndcg@10"]);
        assert_eq!(keys("coltrast/chunk/ndcg@10"), ["metric.coltrast/chunk/ndcg@10"]);
        assert_eq!(keys("best_epoch"), ["stat.train.best_epoch"]);
        assert_eq!(keys("stat.train.val_loss_best"), ["stat.train.val_loss_best"]);
        assert!(metric_columns(&r, "mrr@10").unwrap_err().to_string().contains("no recorded metric matches"));
        assert!(metric_columns(&r, "accuracy").unwrap_err().to_string().contains("[SYSTEM/][LEVEL/]METRIC"));
    }

    #[test]
    fn show_has_differing_settings_as_columns_and_marks_the_best() {
        let out = render_show(&three(), &ShowOptions::default()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        // group line, label line, rule, 3 rows, footer
        assert_eq!(lines.len(), 7, "{out}");
        assert!(lines[0].contains("base-whole") && lines[0].contains("coltrast"), "{out}");
        assert!(lines[1].starts_with("name ") && lines[1].contains("chunk.similarity_threshold"), "{out}");
        assert!(lines[1].contains("mine.num_negatives") && !lines[1].contains("train.seed"), "{out}");
        assert!(lines[4].starts_with("t=0.7") && lines[4].contains("0.860*"), "{out}");
        assert!(!lines[3].contains("0.800*"), "{out}");
        // the baseline is the same in every row: nothing to mark
        assert!(!out.contains("0.700*"), "{out}");
        let sorted =
            render_show(&three(), &ShowOptions { sort: Some("coltrast/ndcg@10".into()), ..Default::default() })
                .unwrap();
        let names: Vec<&str> = sorted.lines().skip(3).take(3).map(|l| l.split_whitespace().next().unwrap()).collect();
        assert_eq!(names, ["t=0.7", "t=0.9", "t=0.5"]);
        let err =
            render_show(&three(), &ShowOptions { sort: Some("ndcg@10".into()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("name one system"), "{err}");
        let by_loss = ShowOptions { metrics: vec!["val_loss_best".into()], ..Default::default() };
        let out = render_show(&three(), &by_loss).unwrap();
        assert!(out.contains("0.8000*"), "lower loss is better: {out}");
    }

    #[test]
    fn show_json_and_csv() {
        let j: serde_json::Value = serde_json::from_str(
            &render_show(&three(), &ShowOptions { format: Format::Json, ..Default::default() }).unwrap(),
        )
        .unwrap();
        assert_eq!(j["experiments"].as_array().unwrap().len(), 3);
        assert_eq!(j["experiments"][0]["settings"]["chunk.similarity_threshold"], 0.5);
        assert_eq!(j["best"]["metric.coltrast/document/ndcg@10"], serde_json::json!(["t=0.7"]));
        let csv = render_show(&three(), &ShowOptions { format: Format::Csv, ..Default::default() }).unwrap();
        let first: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        assert_eq!(first[..3], ["name", "chunk.similarity_threshold", "mine.num_negatives"]);
        assert_eq!(csv.lines().count(), 4);
    }

    #[test]
    fn diff_shows_differing_settings_deltas_and_shared_stages() {
        let r = three();
        let out = render_diff(&r[0], &r[2], false).unwrap();
        assert!(out.contains("chunk.similarity_threshold") && out.contains("mine.num_negatives"), "{out}");
        assert!(!out.contains("train.seed"), "{out}");
        let line = out.lines().find(|l| l.contains("coltrast document nDCG@10")).unwrap();
        assert!(line.trim_end().ends_with("+0.030"), "{line}");
        let ingest = out.lines().find(|l| l.trim_start().starts_with("ingest")).unwrap();
        assert!(ingest.ends_with("shared"), "{ingest}");
        let chunk = out.lines().find(|l| l.trim_start().starts_with("chunk ")).unwrap();
        assert!(!chunk.ends_with("shared"), "{chunk}");
        let j: serde_json::Value = serde_json::from_str(&render_diff(&r[0], &r[2], true).unwrap()).unwrap();
        assert_eq!(j["settings"].as_array().unwrap().len(), 2);
        let m = j["metrics"].as_array().unwrap();
        let d =
            m.iter().find(|x| x["column"] == "metric.coltrast/document/ndcg@10").unwrap()["delta"].as_f64().unwrap();
        assert!((d - 0.03).abs() < 1e-9, "{d}");
    }
}
