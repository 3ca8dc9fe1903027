//! What each CLI command does, as library functions (the binary only parses arguments and prints).

use std::io::Write;
use std::path::PathBuf;

use crate::engine::{human_duration, Freshness, Outcome, Pipeline, RunOptions, StageReport};
use crate::error::{Error, Result};
use crate::settings::{self, Resolved, Sources};

/// Settings sources common to every command.
#[derive(Debug, Clone, Default)]
pub struct Common {
    pub config: Option<PathBuf>,
    pub sets: Vec<String>,
}

pub fn resolve(common: &Common) -> Result<Resolved> {
    settings::resolve(&Sources::from_process(common.config.clone(), common.sets.clone()))
}

fn short(fp: &str) -> &str {
    &fp[..fp.len().min(12)]
}

/// `coltrast run`: prints one line per stage (`cached` or `ran`, wall time, artifact dir) to stderr.
pub fn run(common: &Common, opts: &RunOptions) -> Result<Vec<StageReport>> {
    let resolved = resolve(common)?;
    let s = &resolved.settings;
    let pipeline = Pipeline::of(s)?;
    let started = std::time::Instant::now();
    let reports = pipeline.run(opts, |r| eprintln!("{}", r.line()))?;
    let ran = reports.iter().filter(|r| r.outcome == Outcome::Ran).count();
    eprintln!(
        "{} stages, {} ran, {} cached, {}",
        reports.len(),
        ran,
        reports.len() - ran,
        human_duration(started.elapsed())
    );
    if let Some(eval) = reports.iter().find(|r| r.stage == crate::artifacts::StageId::Eval.as_str()) {
        // eval.md ends with the best system and the served one: printed once, here
        if let Ok(md) = std::fs::read_to_string(eval.dir.join(crate::artifacts::eval::REPORT)) {
            println!("{}", md.trim_end());
        }
    }
    Ok(reports)
}

/// `coltrast status`.
pub fn status(common: &Common, out: &mut dyn Write) -> Result<bool> {
    let resolved = resolve(common)?;
    let s = &resolved.settings;
    let pipeline = Pipeline::of(s)?;
    let mut all_fresh = true;
    for st in pipeline.status()? {
        match st.freshness {
            Freshness::UpToDate { fingerprint } => {
                writeln!(out, "{:<8} up to date  {}", st.stage, short(&fingerprint)).map_err(pipe)?
            }
            Freshness::Stale { reasons } => {
                all_fresh = false;
                writeln!(out, "{:<8} will run", st.stage).map_err(pipe)?;
                for r in reasons {
                    writeln!(out, "         - {r}").map_err(pipe)?;
                }
            }
        }
    }
    Ok(all_fresh)
}

/// `coltrast show STAGE`.
pub fn show(common: &Common, stage: &str, out: &mut dyn Write) -> Result<()> {
    let resolved = resolve(common)?;
    let s = &resolved.settings;
    let pipeline = Pipeline::of(s)?;
    let (dir, m, current) = pipeline.show(stage)?;
    writeln!(out, "stage:       {}", m.stage).map_err(pipe)?;
    writeln!(out, "artifact:    {}", dir.display()).map_err(pipe)?;
    writeln!(
        out,
        "state:       {}",
        if current {
            "up to date with the current settings"
        } else {
            "last run (out of date with the current settings)"
        }
    )
    .map_err(pipe)?;
    writeln!(out, "outputs:").map_err(pipe)?;
    for o in &m.outputs {
        let rows = o.rows.map(|r| format!("{r} rows, ")).unwrap_or_default();
        writeln!(out, "  {}  ({rows}{} bytes)", dir.join(&o.path).display(), o.size).map_err(pipe)?;
    }
    writeln!(out, "manifest:").map_err(pipe)?;
    let text = serde_json::to_string_pretty(&m).map_err(Error::internal)?;
    writeln!(out, "{text}").map_err(pipe)?;
    Ok(())
}

/// `coltrast gc`: with `keep_experiments`, every artifact a recorded experiment references stays.
pub fn gc(common: &Common, keep: usize, dry_run: bool, keep_experiments: bool, out: &mut dyn Write) -> Result<usize> {
    let resolved = resolve(common)?;
    let s = &resolved.settings;
    let pipeline = Pipeline::of(s)?;
    let pinned = if keep_experiments { crate::exp::pinned(s)? } else { Default::default() };
    let removed = pipeline.gc_pinned(keep, dry_run, &pinned)?;
    for p in &removed {
        writeln!(out, "{} {}", if dry_run { "would remove" } else { "removed" }, p.display()).map_err(pipe)?;
    }
    Ok(removed.len())
}

/// Stdout errors: a broken pipe ends the program quietly (the binary checks for it).
fn pipe(e: std::io::Error) -> Error {
    Error::io("<stdout>", e)
}

/// Options shared by the query commands.
#[derive(Debug, Clone)]
pub struct QueryOpts {
    pub k: usize,
    pub json: bool,
    pub rerank: bool,
    pub project: Option<String>,
}

fn one_line(text: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= width {
        flat
    } else {
        format!("{}…", flat.chars().take(width).collect::<String>())
    }
}

/// The checks the server also applies ([`crate::query::check_request`]), before anything is loaded.
fn check_query(query: &str, o: &QueryOpts) -> Result<()> {
    crate::query::check_request(query, o.k).map_err(|(field, m)| match field {
        "k" => Error::Usage(format!("-k: {m}")),
        _ => Error::Usage(m),
    })
}

fn json_out(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(Error::internal)?;
    writeln!(out, "{text}").map_err(pipe)
}

/// `coltrast search`.
pub fn search(common: &Common, query: &str, o: &QueryOpts, out: &mut dyn Write) -> Result<()> {
    check_query(query, o)?;
    let s = resolve(common)?.settings;
    let searcher = crate::query::Searcher::open(&s)?;
    let hits = searcher.search(query, o.k, o.project.as_deref(), o.rerank)?;
    if o.json {
        return json_out(out, &serde_json::json!({ "query": query, "chunks": hits }));
    }
    for (i, h) in hits.iter().enumerate() {
        writeln!(out, "{:>2}. {:.3}  [{}]  {}", i + 1, h.score, h.project_id, one_line(&h.text, 110)).map_err(pipe)?;
    }
    Ok(())
}

/// `coltrast ask`.
pub fn ask(common: &Common, question: &str, o: &QueryOpts, out: &mut dyn Write) -> Result<()> {
    check_query(question, o)?;
    let s = resolve(common)?.settings;
    let searcher = crate::query::Searcher::open(&s)?;
    let a = searcher.ask(question, o.k, o.rerank)?;
    if o.json {
        return json_out(out, &a);
    }
    writeln!(out, "project:    {}", a.top_project).map_err(pipe)?;
    writeln!(out, "confidence: {:.2}", a.confidence).map_err(pipe)?;
    for (i, h) in a.chunks.iter().enumerate() {
        writeln!(out, "\n[{}] {:.3}\n{}", i + 1, h.score, h.text.trim()).map_err(pipe)?;
    }
    Ok(())
}

/// `coltrast explore`.
pub fn explore(common: &Common, keywords: &str, o: &QueryOpts, out: &mut dyn Write) -> Result<()> {
    check_query(keywords, o)?;
    let s = resolve(common)?.settings;
    let searcher = crate::query::Searcher::open(&s)?;
    let e = searcher.explore(keywords, o.project.as_deref(), o.rerank)?;
    if o.json {
        return json_out(out, &e);
    }
    writeln!(out, "project: {}", e.project_id).map_err(pipe)?;
    for c in e.categories.iter().take(o.k.max(1).max(crate::query::CATEGORIES.len())) {
        writeln!(out, "{:<12} {:.3}  {}", c.category, c.score, one_line(&c.text, 100)).map_err(pipe)?;
    }
    Ok(())
}

/// `coltrast serve`: until SIGTERM or Ctrl-C.
pub fn serve(common: &Common, opts: crate::serve::ServeOptions) -> Result<()> {
    let s = resolve(common)?.settings;
    crate::serve::serve(s, opts)
}

/// `coltrast compare`.
pub fn compare(common: &Common, query: &str, o: &QueryOpts, out: &mut dyn Write) -> Result<()> {
    check_query(query, o)?;
    let s = resolve(common)?.settings;
    let searcher = crate::query::Searcher::open(&s)?;
    let r = searcher.compare(query, o.k, o.rerank)?;
    if o.json {
        return json_out(out, &serde_json::json!({ "query": query, "projects": r }));
    }
    for p in &r {
        writeln!(
            out,
            "{:.3}  {}  ({} hits)\n       {}",
            p.relevance,
            p.project_id,
            p.hits,
            one_line(&p.best.text, 100)
        )
        .map_err(pipe)?;
    }
    Ok(())
}

/// `coltrast report`.
pub fn report(common: &Common, out: &mut dyn Write) -> Result<()> {
    let s = resolve(common)?.settings;
    let text = crate::report::report(&s)?;
    write!(out, "{text}").map_err(pipe)
}

/// `coltrast exp run`: the sweep (stage lines on stderr), then the table of its experiments on stdout.
pub fn exp_run(common: &Common, opts: &crate::exp::RunOptions, out: &mut dyn Write) -> Result<()> {
    let done = crate::exp::run(common.config.clone(), &common.sets, opts)?;
    let records: Vec<crate::exp::record::Record> = done.into_iter().map(|d| d.record).collect();
    let text = crate::exp::view::render_show(&records, &crate::exp::ShowOptions::default())?;
    write!(out, "{text}").map_err(pipe)
}

/// `coltrast exp show`.
pub fn exp_show(common: &Common, opts: &crate::exp::ShowOptions, out: &mut dyn Write) -> Result<()> {
    let s = resolve(common)?.settings;
    let text = crate::exp::show(&s, opts, None)?;
    write!(out, "{text}").map_err(pipe)
}

/// `coltrast exp plot`.
pub fn exp_plot(common: &Common, metric: &str, by: &str, output: Option<PathBuf>, out: &mut dyn Write) -> Result<()> {
    let s = resolve(common)?.settings;
    let (path, drawn) = crate::exp::plot(&s, metric, by, output)?;
    writeln!(
        out,
        "{}  ({} experiments, {} panel{}, {} lines)",
        path.display(),
        drawn.experiments,
        drawn.panels,
        if drawn.panels == 1 { "" } else { "s" },
        drawn.lines
    )
    .map_err(pipe)
}

/// `coltrast exp diff`.
pub fn exp_diff(common: &Common, a: &str, b: &str, json: bool, out: &mut dyn Write) -> Result<()> {
    let s = resolve(common)?.settings;
    let text = crate::exp::diff(&s, a, b, json)?;
    write!(out, "{text}").map_err(pipe)
}

/// `coltrast exp apply`: into `--config FILE`, else ./pipeline.toml (created if missing).
pub fn exp_apply(common: &Common, name: &str, out: &mut dyn Write) -> Result<()> {
    let s = resolve(common)?.settings;
    let config = common.config.clone().unwrap_or_else(|| PathBuf::from("pipeline.toml"));
    let changes = crate::exp::apply(&s, &config, name)?;
    if changes.is_empty() {
        writeln!(out, "{}: already has the settings of {name}", config.display()).map_err(pipe)?;
    }
    for c in &changes {
        writeln!(out, "{}: {} = {}  (was {})", config.display(), c.key, c.after, c.before).map_err(pipe)?;
    }
    Ok(())
}

/// `coltrast exp remove`.
pub fn exp_remove(common: &Common, names: &[String], out: &mut dyn Write) -> Result<()> {
    let s = resolve(common)?.settings;
    for n in crate::exp::remove(&s, names)? {
        writeln!(out, "removed experiment {n}; `coltrast gc` frees the artifacts nothing else references")
            .map_err(pipe)?;
    }
    Ok(())
}
