//! The eval stage's artifact: `eval.parquet` (one row per system, split, level and metric), `eval_queries.parquet`
//! (per query) and the `eval.md` report.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
pub const EVAL: &str = "eval.parquet";
pub const QUERIES: &str = "eval_queries.parquet";
pub const REPORT: &str = "eval.md";
pub const BASELINE: &str = "base-whole";
pub const SYSTEMS: [&str; 6] = [BASELINE, "base", "base+hybrid", "coltrast", "coltrast+rerank", "coltrast+hybrid"];

pub fn eval_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("system", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
        Field::new("queries", DataType::Int64, false),
    ]))
}

pub fn queries_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("qa_id", DataType::Utf8, false),
        Field::new("system", DataType::Utf8, false),
        Field::new("level", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, true),
    ]))
}
