//! The mine stage's artifact: `pairs.parquet`, one training or evaluation query with its positive and its mined
//! hard negatives (columns on the mine stage, [`crate::stages::mine`]).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float32Array, Float32Builder, ListArray, ListBuilder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, Result};
use crate::table;

use super::Split;
pub const PAIRS: &str = "pairs.parquet";

pub fn pairs_schema() -> Arc<Schema> {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
    Arc::new(Schema::new(vec![
        Field::new("qa_id", DataType::Utf8, false),
        Field::new("project_id", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("positive_text", DataType::Utf8, false),
        Field::new("positive_chunk_id", DataType::Utf8, true),
        Field::new("positive_source", DataType::Utf8, false),
        Field::new("positive_score", DataType::Float32, false),
        Field::new("negative_chunk_ids", list(DataType::Utf8), false),
        Field::new("negative_texts", list(DataType::Utf8), false),
        Field::new("negative_scores", list(DataType::Float32), false),
        Field::new("source", DataType::Utf8, false),
    ]))
}

/// One mined pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub qa_id: String,
    pub project_id: String,
    pub split: Split,
    pub query: String,
    pub positive_text: String,
    pub positive_chunk_id: Option<String>,
    pub positive_source: String,
    pub positive_score: f32,
    pub negative_chunk_ids: Vec<String>,
    pub negative_texts: Vec<String>,
    pub negative_scores: Vec<f32>,
    /// Where the query comes from: [`LABELLED`] (the dataset's Q&A), or a synthetic source of the generate
    /// stage (`headings`, `cloze`).
    pub source: String,
}

/// The `source` of a pair made from the dataset's own Q&A.
pub const LABELLED: &str = "qa";

impl Pair {
    /// Whether the query is one of the dataset's questions (eval scores only these).
    pub fn is_labelled(&self) -> bool {
        self.source == LABELLED
    }
}

/// Write pairs.parquet.
pub fn write_pairs(path: &Path, pairs: &[Pair]) -> Result<u64> {
    let s = |f: fn(&Pair) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(pairs.iter().map(f))) };
    let mut ids = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("item", DataType::Utf8, true)));
    let mut texts =
        ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("item", DataType::Utf8, true)));
    let mut scores =
        ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new("item", DataType::Float32, true)));
    for p in pairs {
        for v in &p.negative_chunk_ids {
            ids.values().append_value(v);
        }
        ids.append(true);
        for v in &p.negative_texts {
            texts.values().append_value(v);
        }
        texts.append(true);
        for v in &p.negative_scores {
            scores.values().append_value(*v);
        }
        scores.append(true);
    }
    table::write_parquet(
        path,
        pairs_schema(),
        vec![
            s(|p| &p.qa_id),
            s(|p| &p.project_id),
            s(|p| p.split.as_str()),
            s(|p| &p.query),
            s(|p| &p.positive_text),
            Arc::new(StringArray::from_iter(pairs.iter().map(|p| p.positive_chunk_id.as_deref()))),
            s(|p| &p.positive_source),
            Arc::new(Float32Array::from_iter_values(pairs.iter().map(|p| p.positive_score))),
            Arc::new(ids.finish()),
            Arc::new(texts.finish()),
            Arc::new(scores.finish()),
            s(|p| &p.source),
        ],
    )
}

/// Read pairs.parquet back (for training and evaluation).
pub fn read_pairs(dir: &Path) -> Result<Vec<Pair>> {
    let path = dir.join(PAIRS);
    let b = table::read_parquet(&path, "mine", &pairs_schema())?;
    let col = |n: &str| table::str_col(&b, n);
    let source = col("source")?;
    let (qa, pid, split, query, ptext, pcid, psrc) = (
        col("qa_id")?,
        col("project_id")?,
        col("split")?,
        col("query")?,
        col("positive_text")?,
        col("positive_chunk_id")?,
        col("positive_source")?,
    );
    let pscore = b
        .column_by_name("positive_score")
        .and_then(|c| c.as_any().downcast_ref::<Float32Array>())
        .ok_or_else(|| Error::internal("positive_score"))?;
    let list = |n: &str| {
        b.column_by_name(n)
            .and_then(|c| c.as_any().downcast_ref::<ListArray>())
            .ok_or_else(|| Error::internal(format!("{n} is not a list")))
    };
    let (nid, ntext, nscore) = (list("negative_chunk_ids")?, list("negative_texts")?, list("negative_scores")?);
    let strings = |l: &ListArray, i: usize| -> Vec<String> {
        let v = l.value(i);
        let a =
            v.as_any().downcast_ref::<StringArray>().map(|a| (0..a.len()).map(|k| a.value(k).to_string()).collect());
        a.unwrap_or_default()
    };
    let mut out = Vec::with_capacity(b.num_rows());
    for i in 0..b.num_rows() {
        let sv = nscore.value(i);
        let scores = sv.as_any().downcast_ref::<Float32Array>().map(|a| a.values().to_vec()).unwrap_or_default();
        out.push(Pair {
            qa_id: qa.value(i).to_string(),
            project_id: pid.value(i).to_string(),
            split: super::split_at(&path, i, split.value(i))?,
            query: query.value(i).to_string(),
            positive_text: ptext.value(i).to_string(),
            positive_chunk_id: table::opt_str(pcid, i).map(String::from),
            positive_source: psrc.value(i).to_string(),
            positive_score: pscore.value(i),
            negative_chunk_ids: strings(nid, i),
            negative_texts: strings(ntext, i),
            negative_scores: scores,
            source: source.value(i).to_string(),
        });
    }
    Ok(out)
}
