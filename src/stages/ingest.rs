//! # ingest: documents and Q&A pairs → Parquet
//!
//! **What.** Reads the dataset named by `ingest.path` and writes one table of projects (documents) and one of
//! question–answer pairs. Text is normalised to Unicode NFC with line endings unified to `\n`; the source
//! file keeps the raw bytes.
//!
//! **Inputs** (`ingest.format`, `"auto"` detects):
//! - `seed-json`: one JSON file
//!   `{"projects":[{"project_id","readme_content","qa_pairs":[{"question","answer","context"}]}]}`.
//! - `markdown`: a folder of `*.md` files (one project per file, id = file stem) plus a Q&A file
//!   (`ingest.qa_path`, default `qa.jsonl` or `qa.csv` in the folder) with `project_id, question, answer[, context]`.
//! - `beir`: `corpus.jsonl` (`_id, title, text`), `queries.jsonl` (`_id, text`), and `qrels/{train,dev,test}.tsv`
//!   or `qrels.tsv` (header line; `query-id, corpus-id, score`). Each document is a project, each qrel with
//!   score > 0 a Q&A whose answer is unknown; `split` is the qrels file's name.
//!
//! **Outputs.**
//! - `projects.parquet`: `project_id` Utf8, `title` Utf8 (first Markdown heading, the BEIR title, else the
//!   id), `text` Utf8, `n_chars` Int64 (Unicode scalar values), `source` Utf8 (file the project came from,
//!   relative to the input).
//! - `qa.parquet`: `qa_id` Utf8, `project_id` Utf8, `question` Utf8, `answer` Utf8 nullable, `context` Utf8
//!   nullable, `split` Utf8 nullable.
//!
//! **Params.** `ingest.path`, `ingest.format`, `ingest.qa_path`.
//!
//! **Cache key.** The format setting and the content hash of the input file or folder (its path is not part
//! of the key: moving the dataset does not rerun anything).
//!
//! **Errors.** One line naming the file, the record and the field, exit 1: malformed JSON (line:column), a
//! missing or wrongly typed field, a duplicate project_id, a Q&A naming an unknown project, an empty
//! question, non-UTF-8 bytes, an empty dataset. An empty README is a warning; the project is kept.
//!
//! **Example.** `coltrast run ingest --set ingest.path=../shared/data/boolq`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::artifacts::dataset::{write_projects, write_qa, Dataset, Project, Qa, PROJECTS, QA};
use crate::artifacts::{Split, StageId};
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, IoContext, Result};
use crate::settings::{IngestFormat, Settings};
use crate::text::first_heading;

pub struct Ingest;

impl Stage<Settings> for Ingest {
    fn id(&self) -> StageId {
        StageId::Ingest
    }
    fn upstream(&self) -> &'static [StageId] {
        &[]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        // the Q&A file as written in the settings ("" without one); its content enters as an input
        let qa_path = s.ingest.qa_path.as_deref().map(|p| p.to_string_lossy()).unwrap_or_default();
        Settings::key_value(&IngestKey { format: s.ingest.format, qa_path: &qa_path })
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        let mut v = vec![ExternalInput { name: "dataset".into(), path: s.resolve_path(&s.ingest.path) }];
        if let Some(qa) = &s.ingest.qa_path {
            v.push(ExternalInput { name: "qa".into(), path: s.resolve_path(qa) });
        }
        Ok(v)
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config;
        let path = s.resolve_path(&s.ingest.path);
        let qa_path = s.ingest.qa_path.as_ref().map(|p| s.resolve_path(p));
        let ds = load(&path, s.ingest.format, qa_path.as_deref())?;
        tracing::info!(projects = ds.projects.len(), qa = ds.qa.len(), "ingested");
        let n = write_projects(&ctx.output(PROJECTS), &ds.projects)?;
        ctx.record_rows(PROJECTS, n);
        ctx.fault_point("between-tables");
        let n = write_qa(&ctx.output(QA), &ds.qa)?;
        ctx.record_rows(QA, n);
        ctx.record_stat("projects", ds.projects.len() as u64);
        ctx.record_stat("qa_pairs", ds.qa.len() as u64);
        Ok(())
    }
}

// ------------------------------------------------------------------------------------------------------------
// Loading

/// Load a dataset in the given (or detected) format, checked and normalised.
pub fn load(path: &Path, format: IngestFormat, qa_path: Option<&Path>) -> Result<Dataset> {
    if !path.exists() {
        return Err(Error::Usage(format!("{}: dataset not found (ingest.path)", path.display())));
    }
    let format = match format {
        IngestFormat::Auto => detect(path)?,
        f => f,
    };
    let ds = match format {
        IngestFormat::SeedJson => load_seed(path)?,
        IngestFormat::Markdown => load_markdown(path, qa_path)?,
        IngestFormat::Beir => load_beir(path)?,
        IngestFormat::Auto => unreachable!("detect never returns Auto"),
    };
    check(path, &ds)?;
    Ok(ds)
}

fn detect(path: &Path) -> Result<IngestFormat> {
    if path.is_dir() {
        if path.join("corpus.jsonl").is_file() {
            return Ok(IngestFormat::Beir);
        }
        let has_md = std::fs::read_dir(path)
            .at(path)?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "md"));
        if has_md {
            return Ok(IngestFormat::Markdown);
        }
        return Err(Error::Usage(format!(
            "{}: cannot detect the dataset format (no corpus.jsonl, no *.md); set ingest.format",
            path.display()
        )));
    }
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => Ok(IngestFormat::SeedJson),
        _ => Err(Error::Usage(format!(
            "{}: cannot detect the dataset format from the file name; set ingest.format",
            path.display()
        ))),
    }
}

/// Read a file as UTF-8; bad bytes are reported with their line and column.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).at(path)?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let before = &bytes[..at];
            let line = before.iter().filter(|b| **b == b'\n').count() + 1;
            let col = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
            Err(Error::data(path, format!("line {line}, column {col}"), format!("invalid UTF-8 (byte offset {at})")))
        }
    }
}

/// NFC and `\n` line endings.
pub fn normalize(s: &str) -> String {
    let unified = s.replace("\r\n", "\n").replace('\r', "\n");
    unified.nfc().collect()
}

fn title_or_id(text: &str, id: &str) -> String {
    first_heading(text).unwrap_or_else(|| id.to_string())
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A required string field of a JSON object.
fn req_str(path: &Path, record: &str, obj: &serde_json::Map<String, Value>, field: &str) -> Result<String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(normalize(s)),
        Some(other) => {
            Err(Error::data(path, format!("{record}.{field}"), format!("expected a string, got {}", json_type(other))))
        }
        None => Err(Error::data(path, record, format!("missing field {field:?}"))),
    }
}

/// An optional string field (absent or null is None).
fn opt_str(path: &Path, record: &str, obj: &serde_json::Map<String, Value>, field: &str) -> Result<Option<String>> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(normalize(s))),
        Some(other) => Err(Error::data(
            path,
            format!("{record}.{field}"),
            format!("expected a string or null, got {}", json_type(other)),
        )),
    }
}

fn parse_json(path: &Path, text: &str, record: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        Error::data(
            path,
            record,
            format!("malformed JSON at line {}, column {}: {}", e.line(), e.column(), strip_pos(&e)),
        )
    })
}

fn strip_pos(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn as_object<'v>(path: &Path, record: &str, v: &'v Value) -> Result<&'v serde_json::Map<String, Value>> {
    v.as_object().ok_or_else(|| Error::data(path, record, format!("expected an object, got {}", json_type(v))))
}

fn load_seed(path: &Path) -> Result<Dataset> {
    let text = read_text(path)?;
    let root = parse_json(path, &text, "document")?;
    let root = as_object(path, "document", &root)?;
    let projects = match root.get("projects") {
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(Error::data(path, "projects", format!("expected an array, got {}", json_type(other))))
        }
        None => return Err(Error::data(path, "document", "missing field \"projects\"")),
    };
    let source = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let mut ds = Dataset::default();
    for (i, p) in projects.iter().enumerate() {
        let rec = format!("projects[{i}]");
        let obj = as_object(path, &rec, p)?;
        let project_id = req_str(path, &rec, obj, "project_id")?;
        if project_id.trim().is_empty() {
            return Err(Error::data(path, format!("{rec}.project_id"), "empty project_id"));
        }
        let readme = req_str(path, &rec, obj, "readme_content")?;
        let pairs = match obj.get("qa_pairs") {
            Some(Value::Array(a)) => a.as_slice(),
            None | Some(Value::Null) => &[],
            Some(other) => {
                return Err(Error::data(
                    path,
                    format!("{rec}.qa_pairs"),
                    format!("expected an array, got {}", json_type(other)),
                ))
            }
        };
        for (j, q) in pairs.iter().enumerate() {
            let qrec = format!("{rec}.qa_pairs[{j}]");
            let qo = as_object(path, &qrec, q)?;
            let question = req_str(path, &qrec, qo, "question")?;
            if question.trim().is_empty() {
                return Err(Error::data(path, format!("{qrec}.question"), "empty question"));
            }
            let answer = req_str(path, &qrec, qo, "answer")?;
            let context = opt_str(path, &qrec, qo, "context")?;
            ds.qa.push(Qa {
                qa_id: format!("{project_id}/{j}"),
                project_id: project_id.clone(),
                question,
                answer: Some(answer),
                context,
                split: None,
            });
        }
        ds.projects.push(Project {
            title: title_or_id(&readme, &project_id),
            project_id,
            text: readme,
            source: source.clone(),
        });
    }
    check_records(path, &ds, |i| format!("projects[{i}]"))?;
    Ok(ds)
}

fn load_markdown(dir: &Path, qa_path: Option<&Path>) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(Error::Usage(format!("{}: markdown format needs a folder of .md files", dir.display())));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    let mut ds = Dataset::default();
    for f in &files {
        let id = f.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        let text = normalize(&read_text(f)?);
        let source = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        ds.projects.push(Project { title: title_or_id(&text, &id), project_id: id, text, source });
    }
    let qa_file = match qa_path {
        Some(p) => Some(p.to_path_buf()),
        None => ["qa.jsonl", "qa.csv"].iter().map(|n| dir.join(n)).find(|p| p.is_file()),
    };
    match qa_file {
        None => tracing::warn!("{}: no qa.jsonl or qa.csv; ingesting documents only", dir.display()),
        Some(q) if q.extension().is_some_and(|x| x == "csv") => ds.qa = load_qa_csv(&q)?,
        Some(q) => ds.qa = load_qa_jsonl(&q)?,
    }
    check_records(dir, &ds, |i| files.get(i).map(|f| f.display().to_string()).unwrap_or_default())?;
    Ok(ds)
}

fn load_qa_jsonl(path: &Path) -> Result<Vec<Qa>> {
    let text = read_text(path)?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = format!("line {}", n + 1);
        let v = parse_json(path, line, &rec)?;
        let obj = as_object(path, &rec, &v)?;
        let question = req_str(path, &rec, obj, "question")?;
        if question.trim().is_empty() {
            return Err(Error::data(path, format!("{rec}.question"), "empty question"));
        }
        out.push(Qa {
            qa_id: format!("qa{}", out.len()),
            project_id: req_str(path, &rec, obj, "project_id")?,
            question,
            answer: opt_str(path, &rec, obj, "answer")?,
            context: opt_str(path, &rec, obj, "context")?,
            split: None,
        });
    }
    Ok(out)
}

fn load_qa_csv(path: &Path) -> Result<Vec<Qa>> {
    let text = read_text(path)?;
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let headers = rdr.headers().map_err(|e| Error::data(path, "header", e.to_string()))?.clone();
    let col = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (Some(pi), Some(qi)) = (col("project_id"), col("question")) else {
        return Err(Error::data(path, "header", "needs columns project_id and question (and answer, context)"));
    };
    let (ai, ci) = (col("answer"), col("context"));
    let mut out = Vec::new();
    for (n, row) in rdr.records().enumerate() {
        let row = row.map_err(|e| Error::data(path, format!("row {}", n + 1), e.to_string()))?;
        let rec = format!("row {}", n + 1);
        let get = |i: usize, f: &str| {
            row.get(i).map(normalize).ok_or_else(|| Error::data(path, &rec, format!("missing field {f:?}")))
        };
        let question = get(qi, "question")?;
        if question.trim().is_empty() {
            return Err(Error::data(path, format!("{rec}.question"), "empty question"));
        }
        let optional = |i: Option<usize>| i.and_then(|i| row.get(i)).filter(|s| !s.is_empty()).map(normalize);
        out.push(Qa {
            qa_id: format!("qa{}", out.len()),
            project_id: get(pi, "project_id")?,
            question,
            answer: optional(ai),
            context: optional(ci),
            split: None,
        });
    }
    Ok(out)
}

fn load_beir(dir: &Path) -> Result<Dataset> {
    let corpus_path = dir.join("corpus.jsonl");
    let corpus = read_text(&corpus_path)?;
    let mut ds = Dataset::default();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in corpus.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = format!("line {}", n + 1);
        let v = parse_json(&corpus_path, line, &rec)?;
        let obj = as_object(&corpus_path, &rec, &v)?;
        let id = req_str(&corpus_path, &rec, obj, "_id")?;
        let title = opt_str(&corpus_path, &rec, obj, "title")?.unwrap_or_default();
        let text = req_str(&corpus_path, &rec, obj, "text")?;
        if let Some(first) = seen.insert(id.clone(), n + 1) {
            return Err(Error::data(
                &corpus_path,
                format!("{rec}._id"),
                format!("duplicate _id {id:?} (first on line {first})"),
            ));
        }
        let title = if title.trim().is_empty() { id.clone() } else { title };
        ds.projects.push(Project { project_id: id, title, text, source: "corpus.jsonl".into() });
    }
    let queries_path = dir.join("queries.jsonl");
    let qtext = read_text(&queries_path)?;
    let mut queries: BTreeMap<String, String> = BTreeMap::new();
    for (n, line) in qtext.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec = format!("line {}", n + 1);
        let v = parse_json(&queries_path, line, &rec)?;
        let obj = as_object(&queries_path, &rec, &v)?;
        let id = req_str(&queries_path, &rec, obj, "_id")?;
        let text = req_str(&queries_path, &rec, obj, "text")?;
        if text.trim().is_empty() {
            return Err(Error::data(&queries_path, format!("{rec}.text"), "empty question"));
        }
        if queries.insert(id.clone(), text).is_some() {
            return Err(Error::data(&queries_path, format!("{rec}._id"), format!("duplicate _id {id:?}")));
        }
    }
    let mut qrels: Vec<(PathBuf, Option<Split>)> = Vec::new();
    let qdir = dir.join("qrels");
    if qdir.is_dir() {
        for split in [Split::Train, Split::Dev, Split::Test] {
            let p = qdir.join(format!("{split}.tsv"));
            if p.is_file() {
                qrels.push((p, Some(split)));
            }
        }
    }
    if dir.join("qrels.tsv").is_file() {
        qrels.push((dir.join("qrels.tsv"), None));
    }
    if qrels.is_empty() {
        return Err(Error::Usage(format!(
            "{}: BEIR folder has no qrels.tsv or qrels/{{train,dev,test}}.tsv",
            dir.display()
        )));
    }
    let mut per_query: BTreeMap<String, usize> = BTreeMap::new();
    for (path, split) in qrels {
        let text = read_text(&path)?;
        for (n, line) in text.lines().enumerate() {
            if n == 0 || line.trim().is_empty() {
                continue; // header line
            }
            let rec = format!("line {}", n + 1);
            let cols: Vec<&str> = line.split('\t').collect();
            if cols.len() < 3 {
                return Err(Error::data(&path, rec, "expected 3 tab-separated fields: query-id, corpus-id, score"));
            }
            let score: f64 = cols[2].trim().parse().map_err(|_| {
                Error::data(&path, format!("{rec}.score"), format!("expected a number, got {:?}", cols[2]))
            })?;
            if score <= 0.0 {
                continue;
            }
            let (qid, cid) = (cols[0].trim(), cols[1].trim());
            let question = queries
                .get(qid)
                .ok_or_else(|| Error::data(&path, format!("{rec}.query-id"), format!("unknown query {qid:?}")))?;
            if !seen.contains_key(cid) {
                return Err(Error::data(
                    &path,
                    format!("{rec}.corpus-id"),
                    format!("unknown project {cid:?} (not in corpus.jsonl)"),
                ));
            }
            let k = per_query.entry(qid.to_string()).or_insert(0);
            let qa_id = if *k == 0 { qid.to_string() } else { format!("{qid}#{k}") };
            *k += 1;
            ds.qa.push(Qa {
                qa_id,
                project_id: cid.to_string(),
                question: question.clone(),
                answer: None,
                context: None,
                split,
            });
        }
    }
    Ok(ds)
}

/// Duplicate project ids (with the record that repeats), Q&A naming unknown projects.
fn check_records(path: &Path, ds: &Dataset, record_of: impl Fn(usize) -> String) -> Result<()> {
    let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in ds.projects.iter().enumerate() {
        if let Some(first) = ids.insert(&p.project_id, i) {
            return Err(Error::data(
                path,
                format!("{}.project_id", record_of(i)),
                format!("duplicate project_id {:?} (first in {})", p.project_id, record_of(first)),
            ));
        }
    }
    Ok(())
}

/// Whole-dataset checks shared by all formats.
fn check(path: &Path, ds: &Dataset) -> Result<()> {
    if ds.projects.is_empty() {
        return Err(Error::data(path, "dataset", "empty dataset: no projects"));
    }
    let ids: BTreeSet<&str> = ds.projects.iter().map(|p| p.project_id.as_str()).collect();
    for q in &ds.qa {
        if !ids.contains(q.project_id.as_str()) {
            return Err(Error::data(
                path,
                format!("Q&A {}", q.qa_id),
                format!("project_id {:?} names an unknown project", q.project_id),
            ));
        }
    }
    for p in &ds.projects {
        if p.text.trim().is_empty() {
            tracing::warn!("{}: project {:?} has an empty README; kept", path.display(), p.project_id);
        }
    }
    Ok(())
}

/// The ingest stage's cache key: the format and the Q&A file as configured (their content enters as inputs).
#[derive(Debug, serde::Serialize)]
pub struct IngestKey<'a> {
    pub format: IngestFormat,
    pub qa_path: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfc_and_newlines() {
        assert_eq!(normalize("e\u{301}\r\nx\ry"), "\u{e9}\nx\ny");
    }

    #[test]
    fn headings() {
        assert_eq!(first_heading("intro\n\n## Sub title ##\n# Main").as_deref(), Some("Sub title"));
        assert_eq!(first_heading("```\n# not\n```\nTitle\n=====\n").as_deref(), Some("Title"));
        assert_eq!(first_heading("#hashtag only"), None);
    }

    #[test]
    fn seed_errors_name_record_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        let case = |json: &str| {
            std::fs::write(&p, json).unwrap();
            load(&p, IngestFormat::Auto, None).unwrap_err().to_string()
        };
        let e = case(r##"{"projects":[{"project_id":"a","readme_content":"# A","qa_pairs":[{"answer":"x"}]}]}"##);
        assert!(e.ends_with("x.json: projects[0].qa_pairs[0]: missing field \"question\""), "{e}");
        let e = case(r##"{"projects":[{"project_id":7,"readme_content":"# A"}]}"##);
        assert!(e.ends_with("projects[0].project_id: expected a string, got a number"), "{e}");
        let e = case("{\"projects\": [\n  {\"project_id\": }\n]}");
        assert!(e.contains("malformed JSON at line 2, column"), "{e}");
        let e =
            case(r##"{"projects":[{"project_id":"a","readme_content":"x"},{"project_id":"a","readme_content":"y"}]}"##);
        assert!(e.contains("projects[1].project_id: duplicate project_id \"a\" (first in projects[0])"), "{e}");
        let e = case(
            r##"{"projects":[{"project_id":"a","readme_content":"x","qa_pairs":[{"question":"  ","answer":"y"}]}]}"##,
        );
        assert!(e.contains("projects[0].qa_pairs[0].question: empty question"), "{e}");
        let e = case(r##"{"projects":[]}"##);
        assert!(e.contains("empty dataset"), "{e}");
    }

    #[test]
    fn invalid_utf8_reports_position() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(&p, b"{\"projects\":\n [\xff]}").unwrap();
        let e = load(&p, IngestFormat::Auto, None).unwrap_err().to_string();
        assert!(e.contains("line 2, column 3: invalid UTF-8"), "{e}");
    }

    #[test]
    fn markdown_folder_with_csv() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alpha.md"), "# Alpha Project\r\nText.").unwrap();
        std::fs::write(dir.path().join("beta.md"), "no heading").unwrap();
        std::fs::write(dir.path().join("qa.csv"), "project_id,question,answer\nalpha,What?,This\nbeta,Why?,\n")
            .unwrap();
        let ds = load(dir.path(), IngestFormat::Auto, None).unwrap();
        assert_eq!(ds.projects[0].title, "Alpha Project");
        assert_eq!(ds.projects[0].text, "# Alpha Project\nText.");
        assert_eq!(ds.projects[1].title, "beta");
        assert_eq!(ds.qa.len(), 2);
        assert_eq!(ds.qa[1].answer, None);
        std::fs::write(dir.path().join("qa.csv"), "project_id,question,answer\ngamma,What?,x\n").unwrap();
        let e = load(dir.path(), IngestFormat::Auto, None).unwrap_err().to_string();
        assert!(e.contains("unknown project"), "{e}");
    }

    #[test]
    fn beir_layout() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("corpus.jsonl"),
            "{\"_id\":\"d1\",\"title\":\"T1\",\"text\":\"one\"}\n{\"_id\":\"d2\",\"title\":\"\",\"text\":\"two\"}\n",
        )
        .unwrap();
        std::fs::write(d.join("queries.jsonl"), "{\"_id\":\"q1\",\"text\":\"first?\"}\n").unwrap();
        std::fs::create_dir(d.join("qrels")).unwrap();
        std::fs::write(d.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t1\nq1\td2\t0\n")
            .unwrap();
        let ds = load(d, IngestFormat::Auto, None).unwrap();
        assert_eq!(ds.projects[1].title, "d2");
        let ids: Vec<&str> = ds.qa.iter().map(|q| q.qa_id.as_str()).collect();
        assert_eq!(ids, ["q1", "q1#1"]);
        assert_eq!(ds.qa[0].split, Some(Split::Test));
        std::fs::write(d.join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\nq9\td1\t1\n").unwrap();
        let e = load(d, IngestFormat::Auto, None).unwrap_err().to_string();
        assert!(e.contains("test.tsv: line 2.query-id: unknown query \"q9\""), "{e}");
    }
}
