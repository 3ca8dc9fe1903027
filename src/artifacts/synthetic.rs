//! The generate stage's artifact: `queries.parquet`, the synthetic queries that passed the consistency filter
//! (`query_id`, `query`, `chunk_id`, `project_id`, `source`, `split`, `positive_text`, `base_rank`).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::Result;
use crate::settings::SyntheticSource;
use crate::table;

use super::Split;
pub const QUERIES: &str = "queries.parquet";

pub fn queries_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("query_id", DataType::Utf8, false),
        Field::new("query", DataType::Utf8, false),
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("project_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("positive_text", DataType::Utf8, false),
        Field::new("base_rank", DataType::Int64, false),
    ]))
}

/// One synthetic query.
#[derive(Debug, Clone, PartialEq)]
pub struct Synthetic {
    pub query_id: String,
    pub query: String,
    pub chunk_id: String,
    pub project_id: String,
    pub source: SyntheticSource,
    pub split: Split,
    pub positive_text: String,
    pub base_rank: i64,
}

/// Write queries.parquet.
pub fn write_queries(path: &Path, qs: &[Synthetic]) -> Result<u64> {
    let s = |f: fn(&Synthetic) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(qs.iter().map(f))) };
    table::write_parquet(
        path,
        queries_schema(),
        vec![
            s(|q| &q.query_id),
            s(|q| &q.query),
            s(|q| &q.chunk_id),
            s(|q| &q.project_id),
            s(|q| q.source.as_str()),
            s(|q| q.split.as_str()),
            s(|q| &q.positive_text),
            Arc::new(Int64Array::from_iter_values(qs.iter().map(|q| q.base_rank))),
        ],
    )
}

/// Read queries.parquet back (for the mine stage).
pub fn read_queries(dir: &Path) -> Result<Vec<Synthetic>> {
    let path = dir.join(QUERIES);
    let b = table::read_parquet(&path, "generate", &queries_schema())?;
    let col = |n: &str| table::str_col(&b, n);
    let (id, q, cid, pid, src, split, pos) = (
        col("query_id")?,
        col("query")?,
        col("chunk_id")?,
        col("project_id")?,
        col("source")?,
        col("split")?,
        col("positive_text")?,
    );
    let rank = table::i64_col(&b, "base_rank")?;
    (0..b.num_rows())
        .map(|i| {
            let source = match src.value(i) {
                "headings" => SyntheticSource::Headings,
                "cloze" => SyntheticSource::Cloze,
                "llm" => SyntheticSource::Llm,
                other => {
                    return Err(crate::error::Error::data(
                        &path,
                        format!("row {}.source", i + 1),
                        format!("expected \"headings\" or \"cloze\", got {other:?}"),
                    ))
                }
            };
            Ok(Synthetic {
                query_id: id.value(i).to_string(),
                query: q.value(i).to_string(),
                chunk_id: cid.value(i).to_string(),
                project_id: pid.value(i).to_string(),
                source,
                split: super::split_at(&path, i, split.value(i))?,
                positive_text: pos.value(i).to_string(),
                base_rank: rank.value(i),
            })
        })
        .collect()
}
