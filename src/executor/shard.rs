//! Shards: planning, and the two Parquet files of each (what a worker reads, what it writes).
//!
//! - Shard file `<id>.texts.parquet` ([`texts_schema`]): `text_hash` FixedSizeBinary(32) (blake3 of the text),
//!   `text` Utf8; rows in embedding order.
//! - Output file `<id>.embeddings.parquet` ([`output_schema`]): `text_hash` FixedSizeBinary(32), `embedding`
//!   FixedSizeList<Float32, D> (L2-normalised sentence embedding), `n_tokens` Int32, `tokens` Binary (the
//!   token vectors, little-endian f16, `n_tokens × token_dim`, as the token cache stores them); the shard's rows
//!   in its order. Any engine that reads Parquet can load it.
//!
//! Both are written whole through a temporary name and a rename ([`crate::fsutil::write_atomic`]): a file
//! that exists is complete. A reader still checks that an output's hashes are its shard's, row by row.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, Int32Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::embed::cache::{key, EmbeddingCache, TokenCache};
use crate::error::{Error, Result};
use crate::table;

/// One shard: a contiguous run of the sorted misses.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard<'a> {
    /// blake3 of the model key and the texts' hashes, 32 hex digits.
    pub id: String,
    pub texts: Vec<&'a str>,
}

/// The texts that either cache lacks, deduplicated, sorted by (byte length, text): the order the index stage
/// has always embedded its misses in.
pub fn missing<'a>(emb: &EmbeddingCache, tok: &TokenCache, texts: &[&'a str]) -> Vec<&'a str> {
    let mut m: Vec<&str> = texts.iter().copied().filter(|t| !emb.contains(t) || !tok.contains(t)).collect();
    m.sort_unstable_by_key(|t| (t.len(), *t));
    m.dedup();
    m
}

/// Cut `sorted` into runs of `per_shard` texts (the last may be shorter).
pub fn plan<'a>(model_key: &str, sorted: &[&'a str], per_shard: usize) -> Vec<Shard<'a>> {
    sorted
        .chunks(per_shard.max(1))
        .map(|run| {
            let mut h = blake3::Hasher::new();
            h.update(&(model_key.len() as u64).to_le_bytes());
            h.update(model_key.as_bytes());
            for t in run {
                h.update(&key(t));
            }
            Shard { id: h.finalize().to_hex()[..32].to_string(), texts: run.to_vec() }
        })
        .collect()
}

pub fn texts_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text_hash", DataType::FixedSizeBinary(32), false),
        Field::new("text", DataType::Utf8, false),
    ]))
}

pub fn output_schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text_hash", DataType::FixedSizeBinary(32), false),
        Field::new("embedding", table::embedding_type(dim), false),
        Field::new("n_tokens", DataType::Int32, false),
        Field::new("tokens", DataType::Binary, false),
    ]))
}

/// A shard file through [`table::read_parquet`], as a data error (`<file>: shard: <why>`): shard files belong to
/// no stage, so the stage error's "rerun with --force <stage>" would name nothing.
fn read(path: &Path, what: &str, schema: &Schema) -> Result<arrow::record_batch::RecordBatch> {
    table::read_parquet(path, what, schema).map_err(|e| match e {
        Error::Corrupt { path, message, .. } => Error::data(path, what, message),
        e => e,
    })
}

fn hashes(keys: &[[u8; 32]]) -> Result<ArrayRef> {
    Ok(Arc::new(FixedSizeBinaryArray::try_from_iter(keys.iter()).map_err(Error::internal)?))
}

fn hash_col<'b>(batch: &'b arrow::record_batch::RecordBatch, path: &Path) -> Result<&'b FixedSizeBinaryArray> {
    batch
        .column_by_name("text_hash")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
        .ok_or_else(|| Error::data(path, "column text_hash", "expected FixedSizeBinary(32)"))
}

/// Write a shard file (atomically).
pub fn write_texts(path: &Path, texts: &[&str]) -> Result<()> {
    let keys: Vec<[u8; 32]> = texts.iter().map(|t| key(t)).collect();
    let cols = vec![hashes(&keys)?, Arc::new(StringArray::from_iter_values(texts.iter())) as ArrayRef];
    crate::fsutil::write_atomic(path, &table::parquet_bytes(texts_schema(), cols)?)
}

/// Read a shard file; every text must match its hash.
pub fn read_texts(path: &Path) -> Result<Vec<String>> {
    let b = read(path, "shard", &texts_schema())?;
    let hs = hash_col(&b, path)?;
    let texts = table::str_col(&b, "text")?;
    (0..b.num_rows())
        .map(|i| {
            let t = texts.value(i);
            if key(t) != hs.value(i) {
                return Err(Error::data(path, format!("row {i}"), "text does not match its text_hash"));
            }
            Ok(t.to_string())
        })
        .collect()
}

/// One shard's embeddings, in shard order.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub dim: usize,
    pub keys: Vec<[u8; 32]>,
    /// Flat sentence embeddings, `keys.len() × dim`.
    pub embeddings: Vec<f32>,
    /// Per text, its token vectors as f16 bits.
    pub tokens: Vec<Vec<u16>>,
}

/// Write an output file (atomically).
pub fn write_output(path: &Path, out: &Output, token_dim: usize) -> Result<()> {
    let ns: Vec<i32> = out.tokens.iter().map(|t| (t.len() / token_dim.max(1)) as i32).collect();
    let blobs: Vec<Vec<u8>> = out.tokens.iter().map(|t| t.iter().flat_map(|b| b.to_le_bytes()).collect()).collect();
    let cols: Vec<ArrayRef> = vec![
        hashes(&out.keys)?,
        table::embedding_array(out.embeddings.clone(), out.dim)?,
        Arc::new(Int32Array::from(ns)),
        Arc::new(BinaryArray::from_iter_values(blobs.iter())),
    ];
    crate::fsutil::write_atomic(path, &table::parquet_bytes(output_schema(out.dim), cols)?)
}

/// Read an output file and check it is the output of the shard of `texts` (same hashes, same order) for a
/// model of these dims.
pub fn read_output(path: &Path, texts: &[&str], dim: usize, token_dim: usize) -> Result<Output> {
    let b = read(path, "shard output", &output_schema(dim))?;
    let hs = hash_col(&b, path)?;
    if b.num_rows() != texts.len() {
        return Err(Error::data(path, "rows", format!("{} rows, the shard has {} texts", b.num_rows(), texts.len())));
    }
    let (embeddings, got_dim) = table::embedding_values(&b, "embedding")?;
    if got_dim != dim {
        return Err(Error::data(path, "column embedding", format!("dim {got_dim}, the model's is {dim}")));
    }
    let ns = b
        .column_by_name("n_tokens")
        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
        .ok_or_else(|| Error::data(path, "column n_tokens", "expected Int32"))?;
    let blobs = b
        .column_by_name("tokens")
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| Error::data(path, "column tokens", "expected Binary"))?;
    let mut keys = Vec::with_capacity(texts.len());
    let mut tokens = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        let k = key(t);
        if hs.value(i) != k {
            return Err(Error::data(path, format!("row {i}"), "text_hash is not the shard's"));
        }
        let bytes = blobs.value(i);
        if ns.value(i) < 0 || bytes.len() != ns.value(i) as usize * token_dim * 2 {
            return Err(Error::data(path, format!("row {i}"), "tokens: wrong byte count for n_tokens"));
        }
        keys.push(k);
        tokens.push(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect());
    }
    Ok(Output { dim, keys, embeddings, tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_cuts_contiguous_runs_with_stable_ids() {
        let texts = ["a", "bb", "ccc", "dddd", "eeeee"];
        let p = plan("m", &texts, 2);
        assert_eq!(p.iter().map(|s| s.texts.len()).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(p[0].texts, ["a", "bb"]);
        assert_eq!(p, plan("m", &texts, 2));
        assert_ne!(p[0].id, plan("other-model", &texts, 2)[0].id);
        assert!(plan("m", &[], 2).is_empty());
    }

    #[test]
    fn output_round_trips_and_is_checked_against_its_shard() {
        let dir = tempfile::tempdir().unwrap();
        let texts = ["one", "two"];
        let out = Output {
            dim: 2,
            keys: texts.iter().map(|t| key(t)).collect(),
            embeddings: vec![1.0, 0.0, 0.0, 1.0],
            tokens: vec![vec![1, 2, 3, 4], vec![5, 6]],
        };
        let p = dir.path().join("o.parquet");
        write_output(&p, &out, 2).unwrap();
        assert_eq!(read_output(&p, &texts, 2, 2).unwrap(), out);
        assert!(read_output(&p, &["two", "one"], 2, 2).is_err());
        assert!(read_output(&p, &["one"], 2, 2).is_err());
        let s = dir.path().join("s.parquet");
        write_texts(&s, &texts).unwrap();
        assert_eq!(read_texts(&s).unwrap(), ["one", "two"]);
        // no temporary left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn a_broken_shard_file_is_one_line_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.texts.parquet");
        std::fs::write(&p, b"junk").unwrap();
        let err = read_texts(&p).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: shard: not a readable Parquet file", p.display())), "{err}");
        assert!(!err.contains("--force") && !err.contains('\n'), "{err}");
        let err = read_output(&p, &["one"], 2, 2).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: shard output: ", p.display())), "{err}");
    }
}
