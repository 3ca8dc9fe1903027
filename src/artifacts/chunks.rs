//! The chunk stage's artifact: `chunks.parquet` (the passages every later stage embeds, with the base model's
//! embeddings) and, with `chunk.strategy = "semantic"`, `sentences.parquet`. Columns are listed on the chunk
//! stage ([`crate::stages::chunk`]).

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::Result;
use crate::table;
pub const SENTENCES: &str = "sentences.parquet";

pub const CHUNKS: &str = "chunks.parquet";

pub fn sentences_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("project_id", DataType::Utf8, false),
        Field::new("sentence_idx", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("n_tokens", DataType::Int64, false),
        Field::new("is_heading", DataType::Boolean, false),
        Field::new("embedding", table::embedding_type(dim), false),
    ]))
}

pub fn chunks_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("chunk_id", DataType::Utf8, false),
        Field::new("project_id", DataType::Utf8, false),
        Field::new("ordinal", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("n_tokens", DataType::Int64, false),
        Field::new("first_sentence_idx", DataType::Int64, false),
        Field::new("last_sentence_idx", DataType::Int64, false),
        Field::new("embed_text", DataType::Utf8, false),
        Field::new("embedding", table::embedding_type(dim), false),
    ]))
}

/// One chunk as later stages read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub chunk_id: String,
    pub project_id: String,
    pub ordinal: i64,
    pub text: String,
    pub n_tokens: i64,
    /// The exact text that was embedded (Markdown stripped; for `strategy = "none"` the titled document).
    pub embed_text: String,
}

/// Read chunks.parquet: the chunks and their embeddings (flat, row-major) and dim.
pub fn read_chunks(dir: &Path) -> Result<(Vec<Chunk>, Vec<f32>, usize)> {
    let path = dir.join(CHUNKS);
    // The dim is not known before reading: check every column of the schema but the embedding.
    let full = chunks_schema(0);
    let expected = Schema::new(full.fields().iter().filter(|f| f.name() != "embedding").cloned().collect::<Vec<_>>());
    let probe = table::read_parquet(&path, "chunk", &expected)?;
    let (emb, dim) = table::embedding_values(&probe, "embedding")?;
    let (ids, pids, texts) =
        (table::str_col(&probe, "chunk_id")?, table::str_col(&probe, "project_id")?, table::str_col(&probe, "text")?);
    let (ord, ntok) = (table::i64_col(&probe, "ordinal")?, table::i64_col(&probe, "n_tokens")?);
    let etext = table::str_col(&probe, "embed_text")?;
    let chunks = (0..probe.num_rows())
        .map(|i| Chunk {
            chunk_id: ids.value(i).to_string(),
            project_id: pids.value(i).to_string(),
            ordinal: ord.value(i),
            text: texts.value(i).to_string(),
            n_tokens: ntok.value(i),
            embed_text: etext.value(i).to_string(),
        })
        .collect();
    Ok((chunks, emb, dim))
}

/// One row of chunks.parquet as the chunk stage writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkRecord {
    pub chunk_id: String,
    pub project_id: String,
    pub ordinal: i64,
    pub text: String,
    pub n_tokens: i64,
    pub first: i64,
    pub last: i64,
    pub embed_text: String,
}

/// Chunk id: stable across runs, derived from the project and the chunk's text.
pub fn chunk_id(project_id: &str, text: &str) -> String {
    let mut h = crate::hash::StableHasher::new("coltrast-chunk-id");
    h.str(project_id).str(text);
    h.finish()[..16].to_string()
}

/// Write sentences.parquet.
pub fn write_sentences(path: &Path, rows: &[SentenceRecord<'_>], emb: Vec<f32>, dim: usize) -> Result<u64> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.project_id))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.sentence_idx))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.text))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n_tokens))),
        Arc::new(BooleanArray::from(rows.iter().map(|r| r.is_heading).collect::<Vec<_>>())),
        table::embedding_array(emb, dim)?,
    ];
    table::write_parquet(path, sentences_schema(dim), cols)
}

/// Write chunks.parquet.
pub fn write_chunks(path: &Path, rows: &[ChunkRecord], emb: Vec<f32>, dim: usize) -> Result<u64> {
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.chunk_id.as_str()))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.project_id.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ordinal))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.text.as_str()))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.n_tokens))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.first))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.last))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.embed_text.as_str()))),
        table::embedding_array(emb, dim)?,
    ];
    table::write_parquet(path, chunks_schema(dim), cols)
}

/// One row of sentences.parquet (`strategy = "semantic"` only): a sentence of a document and its embedding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentenceRecord<'a> {
    pub project_id: &'a str,
    pub sentence_idx: i64,
    pub text: &'a str,
    pub n_tokens: i64,
    pub is_heading: bool,
}
