//! The index stage's artifact: the served model's chunk embeddings (`chunk_embeddings.parquet`), the FAISS index
//! (`index.faiss`), the token embeddings for MaxSim (`tokens/`), BM25 (`bm25/`) and `index.json`, which names
//! the served model, its engine and precision.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};

use crate::table;
pub const EMBEDDINGS: &str = "chunk_embeddings.parquet";
pub const FAISS: &str = "index.faiss";
pub const TOKENS: &str = "tokens";
pub const INFO: &str = "index.json";
pub const BM25: &str = "bm25";

pub fn embeddings_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("project_id", DataType::Utf8, false),
        Field::new("embedding", table::embedding_type(dim), false),
    ]))
}
