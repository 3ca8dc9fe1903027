//! The sentence-embedding cache: embeddings keyed by (model hash, text hash), shared by every fingerprint of
//! every stage that embeds with the same model. Changing a chunking threshold re-chunks without re-embedding
//! a sentence; re-indexing after one README changes embeds only that README's new text.
//!
//! On disk: `artifacts/.cache/embeddings/<model-hash>/part-<hash>.parquet`, each with columns
//! `text_hash` FixedSizeBinary(32) (blake3 of the exact text embedded) and `embedding`
//! FixedSizeList<Float32, dim>. New entries are appended as a new part, written to a temporary name and
//! renamed, so an interrupted run leaves either a whole part or none. A part that fails to read is reported
//! and ignored (the cache is only an optimisation); `coltrast gc` does not touch the cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, FixedSizeBinaryArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::error::{Error, IoContext, Result};
use crate::table;

pub fn schema(dim: usize) -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text_hash", DataType::FixedSizeBinary(32), false),
        Field::new("embedding", table::embedding_type(dim), false),
    ]))
}

/// The finished parts of a cache dir (`*.parquet`, not the hidden temporaries), sorted.
fn list_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut parts: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "parquet")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    parts.sort();
    Ok(parts)
}

/// Write new cache entries as one part, `part-<hash of its keys>.parquet`, through a hidden temporary and a
/// rename, so a reader sees a whole part or none.
fn write_part(dir: &Path, keys: &[[u8; 32]], schema: Arc<Schema>, mut cols: Vec<ArrayRef>) -> Result<()> {
    let mut h = blake3::Hasher::new();
    for k in keys {
        h.update(k);
    }
    let name = format!("part-{}.parquet", &h.finalize().to_hex()[..16]);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let hashes = FixedSizeBinaryArray::try_from_iter(keys.iter()).map_err(Error::internal)?;
    cols.insert(0, Arc::new(hashes));
    table::write_parquet(&tmp, schema, cols)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
    let dest = dir.join(name);
    std::fs::rename(&tmp, &dest).at(&dest)?;
    crate::fsutil::sync_dir(dir);
    Ok(())
}

pub struct EmbeddingCache {
    dir: PathBuf,
    dim: usize,
    index: HashMap<[u8; 32], usize>,
    data: Vec<f32>,
    pending: Vec<[u8; 32]>,
    /// Texts embedded by the model (not found in the cache) since the cache was opened.
    pub misses: usize,
    /// Texts served from the cache since it was opened.
    pub hits: usize,
}

/// The cache key of a text: the blake3 of its exact bytes.
pub fn key(text: &str) -> [u8; 32] {
    *blake3::hash(text.as_bytes()).as_bytes()
}

impl EmbeddingCache {
    /// Open (or create) the cache for one model under `cache_root` (the artifacts dir's `.cache`).
    pub fn open(cache_root: &Path, model_hash: &str, dim: usize) -> Result<Self> {
        let dir = cache_root.join("embeddings").join(&model_hash[..model_hash.len().min(32)]);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut cache = EmbeddingCache {
            dir: dir.clone(),
            dim,
            index: HashMap::new(),
            data: Vec::new(),
            pending: vec![],
            misses: 0,
            hits: 0,
        };
        let parts = list_parts(&dir)?;
        for part in parts {
            if let Err(e) = cache.load_part(&part) {
                tracing::warn!("ignoring unreadable embedding cache part: {e}");
            }
        }
        Ok(cache)
    }

    fn load_part(&mut self, path: &Path) -> Result<()> {
        let batch = table::read_parquet(path, "embedding-cache", &schema(self.dim))?;
        let hashes = batch
            .column_by_name("text_hash")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
            .ok_or_else(|| Error::internal("text_hash column"))?;
        let (values, dim) = table::embedding_values(&batch, "embedding")?;
        if dim != self.dim {
            return Err(Error::internal(format!("{}: dim {dim}, expected {}", path.display(), self.dim)));
        }
        for i in 0..hashes.len() {
            let mut k = [0u8; 32];
            k.copy_from_slice(hashes.value(i));
            if !self.index.contains_key(&k) {
                self.index.insert(k, self.data.len() / dim);
                self.data.extend_from_slice(&values[i * dim..(i + 1) * dim]);
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether `text` has a cached embedding.
    pub fn contains(&self, text: &str) -> bool {
        self.index.contains_key(&key(text))
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Remember one embedding computed elsewhere (a shard's output, see [`crate::executor`]) under its text's
    /// key; a key already present is left as it is. Persisted by the next [`EmbeddingCache::flush`].
    pub fn insert_key(&mut self, key: [u8; 32], embedding: &[f32]) -> Result<()> {
        if embedding.len() != self.dim {
            return Err(Error::internal(format!("embedding of {} floats, expected {}", embedding.len(), self.dim)));
        }
        if !self.index.contains_key(&key) {
            self.index.insert(key, self.data.len() / self.dim);
            self.data.extend_from_slice(embedding);
            self.pending.push(key);
        }
        Ok(())
    }

    /// Embeddings of `texts` (flat, row-major, input order). Texts not in the cache go to `embed` (once each,
    /// deduplicated) and are remembered.
    pub fn embed<F>(&mut self, texts: &[&str], embed: F) -> Result<Vec<f32>>
    where
        F: FnOnce(&[&str]) -> Result<Vec<f32>>,
    {
        let keys: Vec<[u8; 32]> = texts.iter().map(|t| key(t)).collect();
        let mut missing: Vec<&str> = Vec::new();
        let mut missing_keys: Vec<[u8; 32]> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (t, k) in texts.iter().zip(&keys) {
            if !self.index.contains_key(k) && seen.insert(*k) {
                missing.push(t);
                missing_keys.push(*k);
            }
        }
        if !missing.is_empty() {
            let fresh = embed(&missing)?;
            if fresh.len() != missing.len() * self.dim {
                return Err(Error::internal(format!(
                    "encoder returned {} floats for {} texts of dim {}",
                    fresh.len(),
                    missing.len(),
                    self.dim
                )));
            }
            for (i, k) in missing_keys.iter().enumerate() {
                self.index.insert(*k, self.data.len() / self.dim);
                self.data.extend_from_slice(&fresh[i * self.dim..(i + 1) * self.dim]);
                self.pending.push(*k);
            }
        }
        self.misses += missing.len();
        self.hits += texts.len() - missing.len();
        let mut out = Vec::with_capacity(texts.len() * self.dim);
        for k in &keys {
            let row = self.index[k];
            out.extend_from_slice(&self.data[row * self.dim..(row + 1) * self.dim]);
        }
        Ok(out)
    }

    /// Persist new entries as one new part (atomic rename).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut flat = Vec::with_capacity(self.pending.len() * self.dim);
        for k in &self.pending {
            let row = self.index[k];
            flat.extend_from_slice(&self.data[row * self.dim..(row + 1) * self.dim]);
        }
        write_part(&self.dir, &self.pending, schema(self.dim), vec![table::embedding_array(flat, self.dim)?])?;
        self.pending.clear();
        Ok(())
    }
}

/// Token embeddings (variable length, stored as f16) keyed by (model hash, text hash), beside the
/// sentence-embedding cache: `artifacts/.cache/tokens/<model-hash>/part-<hash>.parquet` with columns
/// `text_hash` FixedSizeBinary(32), `n_tokens` Int32, `tokens` Binary (little-endian f16, `n_tokens × dim`).
pub struct TokenCache {
    dir: PathBuf,
    dim: usize,
    map: HashMap<[u8; 32], Vec<u16>>,
    pending: Vec<[u8; 32]>,
}

pub fn token_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("text_hash", DataType::FixedSizeBinary(32), false),
        Field::new("n_tokens", DataType::Int32, false),
        Field::new("tokens", DataType::Binary, false),
    ]))
}

impl TokenCache {
    pub fn open(cache_root: &Path, model_hash: &str, dim: usize) -> Result<Self> {
        let dir = cache_root.join("tokens").join(&model_hash[..model_hash.len().min(32)]);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let mut c = TokenCache { dir: dir.clone(), dim, map: HashMap::new(), pending: vec![] };
        let parts = list_parts(&dir)?;
        for part in parts {
            if let Err(e) = c.load_part(&part) {
                tracing::warn!("ignoring unreadable token cache part: {e}");
            }
        }
        Ok(c)
    }

    fn load_part(&mut self, path: &Path) -> Result<()> {
        use arrow::array::{BinaryArray, Int32Array};
        let b = table::read_parquet(path, "token-cache", &token_schema())?;
        let hashes =
            b.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>().ok_or_else(|| Error::internal("text_hash"))?;
        let ns = b.column(1).as_any().downcast_ref::<Int32Array>().ok_or_else(|| Error::internal("n_tokens"))?;
        let data = b.column(2).as_any().downcast_ref::<BinaryArray>().ok_or_else(|| Error::internal("tokens"))?;
        for i in 0..b.num_rows() {
            let bytes = data.value(i);
            if bytes.len() != ns.value(i) as usize * self.dim * 2 {
                return Err(Error::internal(format!("{}: row {i}: wrong token byte count", path.display())));
            }
            let mut k = [0u8; 32];
            k.copy_from_slice(hashes.value(i));
            self.map.insert(k, bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect());
        }
        Ok(())
    }

    pub fn contains(&self, text: &str) -> bool {
        self.map.contains_key(&key(text))
    }

    /// Token vectors of `text` as f32 (row-major `n × dim`), if cached.
    pub fn get(&self, text: &str) -> Option<Vec<f32>> {
        self.map.get(&key(text)).map(|v| v.iter().map(|b| half::f16::from_bits(*b).to_f32()).collect())
    }

    /// Remember token vectors computed elsewhere, already as f16 bits (a shard's output), under their text's
    /// key; a key already present is left as it is.
    pub fn insert_key_f16(&mut self, key: [u8; 32], bits: Vec<u16>) -> Result<()> {
        if bits.len() % self.dim != 0 {
            return Err(Error::internal(format!("{} token values are not a multiple of dim {}", bits.len(), self.dim)));
        }
        if !self.map.contains_key(&key) {
            self.map.insert(key, bits);
            self.pending.push(key);
        }
        Ok(())
    }

    pub fn insert(&mut self, text: &str, tokens: &[f32]) {
        let k = key(text);
        if !self.map.contains_key(&k) {
            self.map.insert(k, tokens.iter().map(|x| half::f16::from_f32(*x).to_bits()).collect());
            self.pending.push(k);
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        use arrow::array::{BinaryArray, Int32Array};
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut ns = Vec::new();
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        for k in &self.pending {
            let v = &self.map[k];
            ns.push((v.len() / self.dim) as i32);
            blobs.push(v.iter().flat_map(|b| b.to_le_bytes()).collect());
        }
        let cols: Vec<ArrayRef> =
            vec![Arc::new(Int32Array::from(ns)), Arc::new(BinaryArray::from_iter_values(blobs.iter()))];
        write_part(&self.dir, &self.pending, token_schema(), cols)?;
        self.pending.clear();
        Ok(())
    }
}

/// Embed `texts` through the cache with the (libtorch) encoder, with a progress bar for the texts not cached.
pub fn embed_all(
    encoder: &dyn crate::backend::SentenceEncoder,
    cache: &mut EmbeddingCache,
    texts: &[&str],
    batch: usize,
    what: &str,
) -> Result<Vec<f32>> {
    cache.embed(texts, |missing| {
        let bar = crate::progress::bar(missing.len() as u64, what);
        let mut out = Vec::with_capacity(missing.len() * encoder.dim());
        for group in missing.chunks(1024) {
            out.extend(encoder.embed(group, batch)?.data);
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    })
}

/// Embed `texts` with `enc`, through both caches; returns (flat sentence embeddings, per-text token rows).
pub fn embed_cached(
    enc: &crate::embed::OrtEncoder,
    emb_cache: &mut EmbeddingCache,
    tok_cache: &mut TokenCache,
    texts: &[&str],
    what: &str,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let mut missing: Vec<&str> =
        texts.iter().copied().filter(|t| !emb_cache.contains(t) || !tok_cache.contains(t)).collect();
    // by length first, so each group of 256 (and so each padded batch) holds texts of similar length
    missing.sort_unstable_by_key(|t| (t.len(), *t));
    missing.dedup();
    if !missing.is_empty() {
        let bar = crate::progress::bar(missing.len() as u64, what);
        for group in missing.chunks(256) {
            let (e, toks) = enc.embed_both(group)?;
            emb_cache.embed(group, |_| Ok(e.data.clone()))?;
            for (t, rows) in group.iter().zip(&toks) {
                tok_cache.insert(t, &rows.data);
            }
            bar.inc(group.len() as u64);
        }
        bar.finish_and_clear();
    }
    let flat = emb_cache.embed(texts, |m| Err(Error::internal(format!("{} texts missing from the cache", m.len()))))?;
    let tokens = texts
        .iter()
        .map(|t| tok_cache.get(t).ok_or_else(|| Error::internal("token cache miss after embedding")))
        .collect::<Result<Vec<_>>>()?;
    Ok((flat, tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(texts: &[&str]) -> Result<Vec<f32>> {
        Ok(texts.iter().flat_map(|t| vec![t.len() as f32, 1.0]).collect())
    }

    #[test]
    fn caches_across_opens_and_counts_misses() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), "abc", 2).unwrap();
        let v = c.embed(&["a", "bb", "a"], fake).unwrap();
        assert_eq!(v, [1.0, 1.0, 2.0, 1.0, 1.0, 1.0]);
        assert_eq!((c.misses, c.hits), (2, 1));
        c.flush().unwrap();
        let mut c = EmbeddingCache::open(dir.path(), "abc", 2).unwrap();
        assert_eq!(c.len(), 2);
        let v = c.embed(&["bb", "ccc"], fake).unwrap();
        assert_eq!(v, [2.0, 1.0, 3.0, 1.0]);
        assert_eq!(c.misses, 1);
        // Another model hash is another cache.
        let c2 = EmbeddingCache::open(dir.path(), "xyz", 2).unwrap();
        assert!(c2.is_empty());
    }

    #[test]
    fn token_cache_round_trips_in_f16() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = TokenCache::open(dir.path(), "m", 2).unwrap();
        c.insert("a", &[0.5, -0.25, 1.0, 0.1]);
        c.flush().unwrap();
        let c = TokenCache::open(dir.path(), "m", 2).unwrap();
        let v = c.get("a").unwrap();
        assert_eq!(v.len(), 4);
        assert!((v[3] - 0.1).abs() < 1e-3 && v[0] == 0.5);
        assert!(c.get("b").is_none());
    }
}
