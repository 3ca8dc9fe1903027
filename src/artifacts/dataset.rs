//! The ingest stage's artifact: the dataset, checked and normalised. `projects.parquet` (`project_id`, `title`,
//! `text`, `n_chars`, `source`) and `qa.parquet` (`qa_id`, `project_id`, `question`, `answer`, `context`,
//! `split`; the last three nullable).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::Result;
use crate::table;

use super::Split;
/// Whether a document has a real title (BEIR) that is not already its first heading: then the title heads it.
pub fn needs_title(p: &Project) -> bool {
    p.title != p.project_id
        && !p.title.is_empty()
        && crate::text::first_heading(&p.text).as_deref() != Some(p.title.as_str())
}

/// The document as one text: `title + " " + text` when the title is not already its first heading.
pub fn titled_text(p: &Project) -> String {
    if needs_title(p) {
        format!("{} {}", p.title, p.text)
    } else {
        p.text.clone()
    }
}

pub const PROJECTS: &str = "projects.parquet";
pub const QA: &str = "qa.parquet";

pub fn projects_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("project_id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("n_chars", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
    ]))
}

pub fn qa_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("qa_id", DataType::Utf8, false),
        Field::new("project_id", DataType::Utf8, false),
        Field::new("question", DataType::Utf8, false),
        Field::new("answer", DataType::Utf8, true),
        Field::new("context", DataType::Utf8, true),
        Field::new("split", DataType::Utf8, true),
    ]))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub project_id: String,
    pub title: String,
    pub text: String,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qa {
    pub qa_id: String,
    pub project_id: String,
    pub question: String,
    pub answer: Option<String>,
    pub context: Option<String>,
    pub split: Option<Split>,
}

#[derive(Debug, Default, Clone)]
pub struct Dataset {
    pub projects: Vec<Project>,
    pub qa: Vec<Qa>,
}

/// Write projects.parquet.
pub fn write_projects(path: &Path, projects: &[Project]) -> Result<u64> {
    let col = |f: fn(&Project) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(projects.iter().map(f))) };
    table::write_parquet(
        path,
        projects_schema(),
        vec![
            col(|p| &p.project_id),
            col(|p| &p.title),
            col(|p| &p.text),
            Arc::new(Int64Array::from_iter_values(projects.iter().map(|p| p.text.chars().count() as i64))),
            col(|p| &p.source),
        ],
    )
}

/// Write qa.parquet.
pub fn write_qa(path: &Path, qa: &[Qa]) -> Result<u64> {
    let req = |f: fn(&Qa) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(qa.iter().map(f))) };
    let opt = |f: fn(&Qa) -> Option<&str>| -> ArrayRef { Arc::new(StringArray::from_iter(qa.iter().map(f))) };
    table::write_parquet(
        path,
        qa_schema(),
        vec![
            req(|q| &q.qa_id),
            req(|q| &q.project_id),
            req(|q| &q.question),
            opt(|q| q.answer.as_deref()),
            opt(|q| q.context.as_deref()),
            opt(|q| q.split.map(Split::as_str)),
        ],
    )
}

/// Read projects.parquet and qa.parquet back (used by later stages).
pub fn read(dir: &Path) -> Result<Dataset> {
    let pb = table::read_parquet(&dir.join(PROJECTS), "ingest", &projects_schema())?;
    let (id, title, text, source) = (
        table::str_col(&pb, "project_id")?,
        table::str_col(&pb, "title")?,
        table::str_col(&pb, "text")?,
        table::str_col(&pb, "source")?,
    );
    let projects = (0..pb.num_rows())
        .map(|i| Project {
            project_id: id.value(i).to_string(),
            title: title.value(i).to_string(),
            text: text.value(i).to_string(),
            source: source.value(i).to_string(),
        })
        .collect();
    let qb = table::read_parquet(&dir.join(QA), "ingest", &qa_schema())?;
    let cols: Vec<&StringArray> = ["qa_id", "project_id", "question", "answer", "context", "split"]
        .iter()
        .map(|c| table::str_col(&qb, c))
        .collect::<Result<_>>()?;
    let qa_path = dir.join(QA);
    let qa = (0..qb.num_rows())
        .map(|i| -> Result<Qa> {
            Ok(Qa {
                qa_id: cols[0].value(i).to_string(),
                project_id: cols[1].value(i).to_string(),
                question: cols[2].value(i).to_string(),
                answer: table::opt_str(cols[3], i).map(String::from),
                context: table::opt_str(cols[4], i).map(String::from),
                split: table::opt_str(cols[5], i).map(|v| super::split_at(&qa_path, i, v)).transpose()?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Dataset { projects, qa })
}
