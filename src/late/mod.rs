//! # late: token-embedding storage and MaxSim reranking (late interaction)
//!
//! **What.** ColBERT-style late interaction for the second retrieval stage: each chunk keeps the vectors of
//! its tokens, and a query's candidates from the FAISS index are re-scored by MaxSim — for every query token
//! the best dot product with any of the chunk's tokens, averaged over the query tokens. This module holds the
//! compact on-disk store of those token vectors ([`TokenStoreWriter`], [`TokenStore`]), [`maxsim`] and
//! [`rerank`].
//!
//! **Format** (three files in one directory; [`TOKENS_FILE`], [`OFFSETS_FILE`], [`META_FILE`]):
//! - `token_embeddings.f16`: every stored token vector, one after another, each `dim` IEEE-754 half floats
//!   (binary16) in little-endian byte order; no header, no padding. A chunk's tokens are contiguous, in
//!   token order (`[CLS]` first, `[SEP]` last, no padding tokens). Size = `count × dim × 2` bytes.
//! - `token_offsets.parquet`: one row per stored chunk, in the order they were added: `chunk_row` Int64 (the
//!   chunk's row in `chunk/chunks.parquet`, which is also its FAISS id), `offset` Int64 (index of its first
//!   token vector in the `.f16` file, counted in tokens, not bytes), `n_tokens` Int32 (≥ 1).
//! - `token_embeddings.json`: `{"format": 1, "dim": T, "dtype": "f16", "count": <token vectors>,
//!   "chunks": <rows in token_offsets.parquet>}`.
//!
//! Vectors are stored as given; the writer expects them L2-normalised (per token), so MaxSim lies in [-1, 1].
//! f16 keeps about three significant digits: a unit vector's components come back within 1e-3 (relative
//! error 2^-11), at half the size of f32. The reader loads the whole `.f16` file into memory (2 bytes per
//! value) and decodes one chunk at a time.
//!
//! **Inputs.** Per chunk, its unpadded, normalised token vectors (`n × dim` f32, row-major); per query, the
//! same for the query's tokens; first-stage candidates as `(chunk_row, score)` best first.
//!
//! **Outputs.** The three files above; reranked `(chunk_row, score)` lists.
//!
//! **Errors.** A missing file is an I/O "not found" error with its path; a file that disagrees with the others
//! (wrong size, offsets out of range, a duplicated row, an unknown dtype) is [`Error::Corrupt`] naming it.
//!
//! **Example.**
//! ```no_run
//! use coltrast::late::{rerank, TokenStore, TokenStoreWriter};
//! let dir = std::path::Path::new("artifacts/index/abc");
//! let mut w = TokenStoreWriter::create(dir, 2)?;
//! w.add(0, &[1.0, 0.0, 0.0, 1.0])?; // chunk row 0: two tokens
//! w.add(1, &[0.6, 0.8])?; // chunk row 1: one token
//! w.finish()?;
//! let store = TokenStore::read(dir)?;
//! let query = [0.0, 1.0];
//! let reranked = rerank(vec![(1, 0.9), (0, 0.8)], &query, &store, 10, 1.0)?;
//! assert_eq!(reranked[0].0, 0); // MaxSim 1.0 beats 0.8
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::table;

/// The stage whose artifacts hold the token store (named in corrupt-artifact errors).
pub const STAGE: &str = "index";
pub const TOKENS_FILE: &str = "token_embeddings.f16";
pub const OFFSETS_FILE: &str = "token_offsets.parquet";
pub const META_FILE: &str = "token_embeddings.json";
const FORMAT: u32 = 1;

/// The schema of `token_offsets.parquet`.
pub fn offsets_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("chunk_row", DataType::Int64, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("n_tokens", DataType::Int32, false),
    ]))
}

/// `token_embeddings.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenStoreMeta {
    pub format: u32,
    pub dim: usize,
    pub dtype: String,
    /// Number of token vectors in the `.f16` file.
    pub count: u64,
    /// Number of chunks (rows of `token_offsets.parquet`).
    pub chunks: u64,
}

/// Writes a token store into a directory, chunk by chunk; [`TokenStoreWriter::finish`] writes the offsets
/// table and the JSON. Meant for a stage's output directory, which the engine makes atomic as a whole.
pub struct TokenStoreWriter {
    dir: PathBuf,
    dim: usize,
    file: BufWriter<fs::File>,
    rows: Vec<i64>,
    offsets: Vec<i64>,
    n_tokens: Vec<i32>,
    seen: std::collections::HashSet<i64>,
    count: u64,
    buf: Vec<u8>,
}

impl TokenStoreWriter {
    /// Start a store of `dim`-float token vectors in `dir` (created if needed).
    pub fn create(dir: &Path, dim: usize) -> Result<TokenStoreWriter> {
        if dim == 0 {
            return Err(Error::Usage("late: token vectors need a positive dimension".into()));
        }
        fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(TOKENS_FILE);
        let file = fs::File::create(&path).at(&path)?;
        Ok(TokenStoreWriter {
            dir: dir.to_path_buf(),
            dim,
            file: BufWriter::with_capacity(1 << 20, file),
            rows: Vec::new(),
            offsets: Vec::new(),
            n_tokens: Vec::new(),
            seen: Default::default(),
            count: 0,
            buf: Vec::new(),
        })
    }

    /// Append the token vectors of chunk `chunk_row` (row-major, `n × dim`, n ≥ 1). Each row is stored once.
    pub fn add(&mut self, chunk_row: i64, tokens: &[f32]) -> Result<()> {
        let dim = self.dim;
        if tokens.is_empty() || tokens.len() % dim != 0 {
            return Err(Error::Usage(format!(
                "late: chunk row {chunk_row}: {} floats is not a positive multiple of the dimension {dim}",
                tokens.len()
            )));
        }
        let n = tokens.len() / dim;
        let n32 = i32::try_from(n)
            .map_err(|_| Error::Usage(format!("late: chunk row {chunk_row}: {n} tokens is too many")))?;
        if chunk_row < 0 {
            return Err(Error::Usage(format!("late: chunk row {chunk_row} is negative")));
        }
        if let Some(pos) = tokens.iter().position(|v| !v.is_finite()) {
            return Err(Error::Usage(format!(
                "late: chunk row {chunk_row}: token {} has a non-finite value",
                pos / dim
            )));
        }
        if !self.seen.insert(chunk_row) {
            return Err(Error::Usage(format!("late: chunk row {chunk_row} was added twice")));
        }
        self.buf.clear();
        self.buf.reserve(tokens.len() * 2);
        for &x in tokens {
            self.buf.extend_from_slice(&f16::from_f32(x).to_le_bytes());
        }
        let path = self.dir.join(TOKENS_FILE);
        self.file.write_all(&self.buf).at(&path)?;
        self.rows.push(chunk_row);
        self.offsets.push(self.count as i64);
        self.n_tokens.push(n32);
        self.count += n as u64;
        Ok(())
    }

    /// Flush the vectors and write `token_offsets.parquet` and `token_embeddings.json`.
    pub fn finish(self) -> Result<TokenStoreMeta> {
        let tokens_path = self.dir.join(TOKENS_FILE);
        let file = self.file.into_inner().map_err(|e| Error::io(&tokens_path, e.into_error()))?;
        file.sync_all().at(&tokens_path)?;
        let chunks = self.rows.len() as u64;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.rows)),
            Arc::new(Int64Array::from(self.offsets)),
            Arc::new(Int32Array::from(self.n_tokens)),
        ];
        table::write_parquet(&self.dir.join(OFFSETS_FILE), offsets_schema(), columns)?;
        let meta = TokenStoreMeta { format: FORMAT, dim: self.dim, dtype: "f16".into(), count: self.count, chunks };
        let meta_path = self.dir.join(META_FILE);
        let json = serde_json::to_vec_pretty(&meta).map_err(Error::internal)?;
        fs::write(&meta_path, json).at(&meta_path)?;
        Ok(meta)
    }
}

/// A token store read into memory.
#[derive(Debug)]
pub struct TokenStore {
    dir: PathBuf,
    meta: TokenStoreMeta,
    /// Raw half floats (bits), `count × dim`.
    data: Vec<u16>,
    /// chunk_row → (offset in tokens, n_tokens).
    spans: HashMap<i64, (usize, usize)>,
}

impl TokenStore {
    /// Read a store written by [`TokenStoreWriter`] from `dir`, checking the three files agree.
    pub fn read(dir: &Path) -> Result<TokenStore> {
        let corrupt =
            |path: &Path, m: String| Error::Corrupt { path: path.to_path_buf(), stage: STAGE.to_string(), message: m };
        let meta_path = dir.join(META_FILE);
        let meta_bytes = fs::read(&meta_path).at(&meta_path)?;
        let meta: TokenStoreMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| corrupt(&meta_path, format!("unreadable: {e}")))?;
        if meta.format != FORMAT {
            return Err(corrupt(&meta_path, format!("format {} (this coltrast reads {FORMAT})", meta.format)));
        }
        if meta.dtype != "f16" {
            return Err(corrupt(&meta_path, format!("dtype {:?}, expected \"f16\"", meta.dtype)));
        }
        if meta.dim == 0 {
            return Err(corrupt(&meta_path, "dim is 0".into()));
        }

        let tokens_path = dir.join(TOKENS_FILE);
        let expected = meta
            .count
            .checked_mul(meta.dim as u64)
            .and_then(|v| v.checked_mul(2))
            .ok_or_else(|| corrupt(&meta_path, "count × dim overflows".into()))?;
        let size = fs::metadata(&tokens_path).at(&tokens_path)?.len();
        if size != expected {
            return Err(corrupt(
                &tokens_path,
                format!("{size} bytes, but {} tokens × {} dims × 2 bytes = {expected}", meta.count, meta.dim),
            ));
        }
        let bytes = fs::read(&tokens_path).at(&tokens_path)?;
        if bytes.len() as u64 != expected {
            return Err(corrupt(&tokens_path, format!("{} bytes, expected {expected}", bytes.len())));
        }
        let data: Vec<u16> = bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
        drop(bytes);

        let offsets_path = dir.join(OFFSETS_FILE);
        let batch = table::read_parquet(&offsets_path, STAGE, &offsets_schema())?;
        let rows = table::i64_col(&batch, "chunk_row")?;
        let offs = table::i64_col(&batch, "offset")?;
        let ntok = batch
            .column_by_name("n_tokens")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
            .ok_or_else(|| corrupt(&offsets_path, "column n_tokens is not Int32".into()))?;
        if batch.num_rows() as u64 != meta.chunks {
            return Err(corrupt(
                &offsets_path,
                format!("{} rows, but {META_FILE} says {} chunks", batch.num_rows(), meta.chunks),
            ));
        }
        let mut spans = HashMap::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            use arrow::array::Array;
            if rows.is_null(i) || offs.is_null(i) || ntok.is_null(i) {
                return Err(corrupt(&offsets_path, format!("row {i}: null value")));
            }
            let (row, off, n) = (rows.value(i), offs.value(i), ntok.value(i));
            if off < 0 || n < 1 || (off as u64).saturating_add(n as u64) > meta.count {
                return Err(corrupt(
                    &offsets_path,
                    format!(
                        "row {i} (chunk_row {row}): offset {off} + n_tokens {n} outside the {} stored tokens",
                        meta.count
                    ),
                ));
            }
            if spans.insert(row, (off as usize, n as usize)).is_some() {
                return Err(corrupt(&offsets_path, format!("row {i}: chunk_row {row} appears twice")));
            }
        }
        Ok(TokenStore { dir: dir.to_path_buf(), meta, data, spans })
    }

    /// Token vector dimension.
    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    /// Number of chunks stored.
    pub fn num_chunks(&self) -> usize {
        self.spans.len()
    }

    /// Number of token vectors stored.
    pub fn num_tokens(&self) -> u64 {
        self.meta.count
    }

    pub fn meta(&self) -> &TokenStoreMeta {
        &self.meta
    }

    /// Whether chunk `chunk_row` has tokens in the store.
    pub fn contains(&self, chunk_row: i64) -> bool {
        self.spans.contains_key(&chunk_row)
    }

    /// The number of tokens of chunk `chunk_row`.
    pub fn n_tokens(&self, chunk_row: i64) -> Option<usize> {
        self.spans.get(&chunk_row).map(|s| s.1)
    }

    /// The token vectors of chunk `chunk_row`, decoded to f32 (`n × dim`, row-major).
    pub fn tokens(&self, chunk_row: i64) -> Option<Vec<f32>> {
        let mut out = Vec::new();
        self.tokens_into(chunk_row, &mut out).then_some(out)
    }

    /// Decode chunk `chunk_row`'s token vectors into `out` (cleared first); false when the row is not stored.
    pub fn tokens_into(&self, chunk_row: i64, out: &mut Vec<f32>) -> bool {
        let Some(&(off, n)) = self.spans.get(&chunk_row) else {
            return false;
        };
        let dim = self.meta.dim;
        out.clear();
        out.extend(self.data[off * dim..(off + n) * dim].iter().map(|&b| f16::from_bits(b).to_f32()));
        true
    }

    fn missing(&self, chunk_row: i64) -> Error {
        Error::Corrupt {
            path: self.dir.join(OFFSETS_FILE),
            stage: STAGE.to_string(),
            message: format!("no token embeddings for chunk row {chunk_row}"),
        }
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators so the loop vectorises.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// MaxSim of a query and a document, both given as unpadded token vectors (`q × dim` and `d × dim`,
/// row-major): for each query token the largest dot product with any document token, summed and divided by
/// the number of query tokens. For unit vectors it lies in [-1, 1]. Returns 0 when either side has no tokens
/// (or `dim` is 0); a trailing partial row is ignored.
pub fn maxsim(query_tokens: &[f32], doc_tokens: &[f32], dim: usize) -> f32 {
    if dim == 0 {
        return 0.0;
    }
    let nq = query_tokens.len() / dim;
    let nd = doc_tokens.len() / dim;
    if nq == 0 || nd == 0 {
        return 0.0;
    }
    let mut total = 0f32;
    for q in query_tokens.chunks_exact(dim) {
        let best = doc_tokens.chunks_exact(dim).map(|d| dot(q, d)).fold(f32::NEG_INFINITY, f32::max);
        total += best;
    }
    total / nq as f32
}

/// MaxSim of the query against the stored tokens of each of the first `depth` candidates
/// (`(chunk_row, first-stage score)`), in candidate order. A candidate whose tokens are not in the store is an
/// [`Error::Corrupt`] (the store and the index disagree).
pub fn maxsim_scores(
    candidates: &[(i64, f32)],
    query_tokens: &[f32],
    store: &TokenStore,
    depth: usize,
) -> Result<Vec<f32>> {
    let dim = store.dim();
    if query_tokens.len() % dim != 0 {
        return Err(Error::Usage(format!(
            "late: query has {} floats, not a multiple of the token dimension {dim}",
            query_tokens.len()
        )));
    }
    let depth = depth.min(candidates.len());
    candidates[..depth]
        .par_iter()
        .map_init(Vec::new, |buf, &(row, _)| {
            if store.tokens_into(row, buf) {
                Ok(maxsim(query_tokens, buf, dim))
            } else {
                Err(store.missing(row))
            }
        })
        .collect()
}

/// Re-score the first `depth` candidates (`(chunk_row, first-stage score)`, best first) by
/// `(1 - weight) * first-stage score + weight * MaxSim` against the chunk's stored token vectors, and sort
/// them by that score (descending; ties keep their first-stage order). Candidates beyond `depth` follow
/// unchanged, in their original order and with their first-stage scores. `weight = 1` is a pure [`maxsim`]
/// rerank; `weight = 0` keeps the order.
pub fn rerank(
    candidates: Vec<(i64, f32)>,
    query_tokens: &[f32],
    store: &TokenStore,
    depth: usize,
    weight: f32,
) -> Result<Vec<(i64, f32)>> {
    let scores = maxsim_scores(&candidates, query_tokens, store, depth)?;
    Ok(crate::lexical::fuse_maxsim(&candidates, &scores, weight))
}

#[cfg(test)]
mod tests;
