//! # index: the FAISS seam
//!
//! **What.** [`VectorIndex`] is the only place in coltrast that talks to FAISS. It builds an inner-product
//! index over unit vectors from a FAISS factory string, searches it (from several threads at once if wanted),
//! and writes / reads it in FAISS's own file format, so `faiss.read_index` in Python opens the same file.
//!
//! Factory strings (the `index.factory` setting) that are tested:
//! - `"Flat"` (the default): exact search, no training.
//! - `"HNSW32"` (any `HNSWn`): graph search, no training; `efSearch` from [`SearchParams::ef_search`].
//! - `"IVF{nlist},Flat"`: inverted lists; trained (k-means) on the very vectors it indexes, then searched
//!   with [`SearchParams::nprobe`] lists per query.
//!
//! Any other factory string FAISS accepts is passed through (trained on the vectors when it needs training),
//! but only the three above are covered by tests.
//!
//! **IVF and small corpora.** FAISS's k-means needs at least one training vector per list. With fewer vectors
//! than `nlist`, [`VectorIndex::build`] fails with an error that names the `index.factory` setting and both
//! counts; nlist is never clamped silently (the factory string is part of the stage fingerprint, so the file
//! should be what it says). Between `nlist` and `39 × nlist` vectors (FAISS's own recommendation) it builds
//! but logs a warning.
//!
//! **Ids.** The id FAISS returns for a vector is its row in the input — by convention the row index into the
//! chunk table (`chunk/chunks.parquet`, whose `embedding` column is what gets indexed), so id `i` is chunk row
//! `i`. Callers may pass explicit non-negative, distinct ids instead; then the index stores the mapping
//! (natively for IVF, through an `IDMap` wrapper otherwise) and the file holds it too.
//!
//! **Search parameters** ([`SearchParams`]) are set on the index after building and after reading: `nprobe`
//! (IVF, default 8, clamped to nlist) and `efSearch` (HNSW, default 64). FAISS also stores them in the file,
//! so Python sees the values coltrast used.
//!
//! **Inputs.** Row-major `f32` vectors, `dim` per row, L2-normalised (inner product = cosine; not checked,
//! but non-finite values are rejected).
//!
//! **Outputs.** Per query, up to `k` `(id, score)` pairs, best first; the score is the inner product (exact for
//! Flat, HNSW and IVF-Flat). Fewer than `k` come back when the index holds fewer vectors or IVF probes too few
//! lists. A FAISS file written atomically (temporary sibling, fsync, rename).
//!
//! **Errors.** A bad factory string or too few vectors to train: [`Error::Usage`] naming `index.factory`. A
//! missing file: [`Error::Io`] (not found) with the path. A file FAISS cannot read, or one that is not an
//! inner-product float index: [`Error::Corrupt`] with the path. (FAISS trusts the sizes written in a file; a
//! file with a damaged size field can make it try a large allocation before it fails. The engine's output
//! hashes and sizes catch such files before they get here.)
//!
//! **Example.**
//! ```no_run
//! use coltrast::index::VectorIndex;
//! let dim = 4;
//! let vectors = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
//! let index = VectorIndex::build("Flat", dim, &vectors, None)?;
//! let hits = index.search(&[0.0, 1.0, 0.0, 0.0], 1)?;
//! assert_eq!(hits[0][0].0, 1); // row 1
//! index.write(std::path::Path::new("index.faiss"))?;
//! let again = VectorIndex::read(std::path::Path::new("index.faiss"))?;
//! assert_eq!(again.len(), 2);
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::ffi::CStr;
use std::fs;
use std::path::{Path, PathBuf};

use faiss::index::{IndexImpl, UpcastIndex};
use faiss::{IdMap, Idx, Index, MetricType};

use crate::error::{Error, IoContext, Result};
use crate::fsutil;

/// The stage whose artifacts hold index files (named in corrupt-artifact errors).
pub const STAGE: &str = "index";
/// The default factory string.
pub const DEFAULT_FACTORY: &str = "Flat";
/// FAISS's recommended minimum number of training vectors per IVF list.
pub const MIN_POINTS_PER_LIST: usize = 39;

/// Search-time parameters, set on the index after it is built or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchParams {
    /// IVF: how many inverted lists to scan per query (clamped to nlist). Default 8.
    pub nprobe: usize,
    /// HNSW: the size of the candidate list during search (FAISS's `efSearch`, at least `k` is sensible).
    /// Default 64.
    pub ef_search: usize,
}

impl Default for SearchParams {
    fn default() -> Self {
        SearchParams { nprobe: 8, ef_search: 64 }
    }
}

/// A FAISS inner-product index over unit vectors; ids are chunk rows unless given explicitly.
#[derive(Debug)]
pub struct VectorIndex {
    inner: IndexImpl,
    dim: usize,
    params: SearchParams,
}

impl VectorIndex {
    /// Build an index with the default [`SearchParams`]. See [`VectorIndex::build_with`].
    pub fn build(factory: &str, dim: usize, vectors: &[f32], ids: Option<&[i64]>) -> Result<VectorIndex> {
        Self::build_with(factory, dim, vectors, ids, SearchParams::default())
    }

    /// Build an index from a FAISS factory string (`"Flat"`, `"HNSW32"`, `"IVF64,Flat"`, ...) over
    /// `vectors` (row-major, `dim` per row, unit-norm), with the inner-product metric. Trains the index on the
    /// same vectors when the factory needs training. `ids`, when given, are the ids search returns (one per
    /// row, non-negative, distinct); otherwise row `i` has id `i`.
    pub fn build_with(
        factory: &str,
        dim: usize,
        vectors: &[f32],
        ids: Option<&[i64]>,
        params: SearchParams,
    ) -> Result<VectorIndex> {
        let factory = factory.trim();
        let n = check_vectors(dim, vectors, "vectors")?;
        if let Some(pos) = vectors.iter().position(|v| !v.is_finite()) {
            return Err(Error::Usage(format!(
                "index: vector {} has a non-finite value at component {}",
                pos / dim,
                pos % dim
            )));
        }
        let custom_ids = match ids {
            None => None,
            Some(ids) => {
                check_ids(ids, n)?;
                // Identity ids need no mapping.
                if ids.iter().enumerate().all(|(i, &id)| id == i as i64) {
                    None
                } else {
                    Some(ids)
                }
            }
        };
        let dim32 = u32::try_from(dim).map_err(|_| Error::Usage(format!("index: dimension {dim} is too large")))?;
        let mut index = faiss::index_factory(dim32, factory, MetricType::InnerProduct).map_err(|e| {
            Error::Usage(format!("index.factory = {factory:?}: FAISS cannot build it: {}", faiss_message(&e)))
        })?;

        if let Some(nlist) = ivf_nlist(&index) {
            if n < nlist {
                return Err(Error::Usage(format!(
                    "index.factory = {factory:?}: IVF with {nlist} lists needs at least {nlist} vectors to train \
                     (FAISS recommends {}), but there are only {n}; use fewer lists or \"Flat\"",
                    nlist * MIN_POINTS_PER_LIST
                )));
            }
            if n < nlist * MIN_POINTS_PER_LIST {
                tracing::warn!(
                    "index.factory = {factory:?}: {n} vectors for {nlist} IVF lists is below FAISS's recommended \
                     {} ({MIN_POINTS_PER_LIST} per list); clustering quality may suffer",
                    nlist * MIN_POINTS_PER_LIST
                );
            }
        }
        if !index.is_trained() {
            if n == 0 {
                return Err(Error::Usage(format!(
                    "index.factory = {factory:?}: this index needs training but there are no vectors"
                )));
            }
            index.train(vectors).map_err(|e| {
                Error::Usage(format!(
                    "index.factory = {factory:?}: training on {n} vectors failed: {}",
                    faiss_message(&e)
                ))
            })?;
        }

        let index = match custom_ids {
            None => {
                if n > 0 {
                    index.add(vectors).map_err(|e| Error::internal(format!("index: add: {}", faiss_message(&e))))?;
                }
                index
            }
            Some(ids) => {
                let xids: Vec<Idx> = ids.iter().map(|&i| Idx::new(i as u64)).collect();
                if ivf_nlist(&index).is_some() {
                    index
                        .add_with_ids(vectors, &xids)
                        .map_err(|e| Error::internal(format!("index: add_with_ids: {}", faiss_message(&e))))?;
                    index
                } else {
                    let mut wrapped = IdMap::new(index)
                        .map_err(|e| Error::internal(format!("index: IDMap: {}", faiss_message(&e))))?;
                    wrapped
                        .add_with_ids(vectors, &xids)
                        .map_err(|e| Error::internal(format!("index: add_with_ids: {}", faiss_message(&e))))?;
                    wrapped.upcast()
                }
            }
        };
        let mut out = VectorIndex { inner: index, dim, params };
        out.apply_params()?;
        Ok(out)
    }

    /// Read an index written by [`VectorIndex::write`] (or by FAISS itself), with the default
    /// [`SearchParams`].
    pub fn read(path: &Path) -> Result<VectorIndex> {
        Self::read_with(path, SearchParams::default())
    }

    /// Read an index file and set `params` on it. A missing file is an I/O "not found" error; a file FAISS
    /// cannot parse, or one that is not an inner-product float index, is [`Error::Corrupt`].
    pub fn read_with(path: &Path, params: SearchParams) -> Result<VectorIndex> {
        let corrupt = |m: String| Error::Corrupt { path: path.to_path_buf(), stage: STAGE.to_string(), message: m };
        let meta = fs::metadata(path).at(path)?;
        if !meta.is_file() {
            return Err(corrupt("not a regular file".into()));
        }
        // Every FAISS float-index file starts with a four-letter code beginning with 'I' ("IxFI", "IHNf",
        // "IwFl", "IxMp", ...). Checking it first turns arbitrary files into a clean error.
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = fs::File::open(path).at(path)?;
            f.read_exact(&mut magic)
                .map_err(|_| corrupt(format!("too short for a FAISS index ({} bytes)", meta.len())))?;
        }
        if magic[0] != b'I' || !magic.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Err(corrupt(format!("not a FAISS index file (starts with {:02x?})", magic)));
        }
        let name = path_str(path)?;
        let index = faiss::read_index(name)
            .map_err(|e| corrupt(format!("FAISS cannot read it: {}", read_failure(&faiss_message(&e)))))?;
        if index.metric_type() != MetricType::InnerProduct {
            return Err(corrupt(format!(
                "the index uses the {:?} metric; coltrast writes inner-product indexes",
                index.metric_type()
            )));
        }
        let dim = index.d() as usize;
        if dim == 0 {
            return Err(corrupt("the index has dimension 0".into()));
        }
        if !index.is_trained() {
            return Err(corrupt("the index is not trained".into()));
        }
        let mut out = VectorIndex { inner: index, dim, params };
        out.apply_params().map_err(|e| corrupt(e.to_string()))?;
        Ok(out)
    }

    /// Write the index to `path` in FAISS's format, atomically: a temporary sibling, fsync, rename.
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).at(&dir)?;
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?
            .to_string_lossy()
            .to_string();
        let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
        let result = (|| {
            faiss::write_index(&self.inner, path_str(&tmp)?).map_err(|e| {
                Error::internal(format!("{}: writing FAISS index: {}", tmp.display(), faiss_message(&e)))
            })?;
            fs::File::open(&tmp).and_then(|f| f.sync_all()).at(&tmp)?;
            fs::rename(&tmp, path).at(path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        fsutil::sync_dir(&dir);
        Ok(())
    }

    /// Search `queries` (row-major, `dim` per row): for each query, up to `k` `(id, inner product)` pairs,
    /// best first. Takes `&self`: FAISS CPU indexes allow concurrent searches, so one index can serve many
    /// threads. Batching queries in one call is still much faster than one call per query.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(i64, f32)>>> {
        let nq = check_vectors(self.dim, queries, "queries")?;
        let k = k.min(self.len());
        if nq == 0 || k == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let mut distances = vec![0f32; nq * k];
        let mut labels = vec![-1 as faiss_sys::idx_t; nq * k];
        let _one_thread = (nq == 1).then(omp::OneThread::enter);
        // SAFETY: the pointer is a live FAISS index owned by `self`; `queries` holds nq*d floats and the output
        // buffers nq*k values each, as faiss_Index_search requires. Search does not modify the index.
        let rc = unsafe {
            faiss_sys::faiss_Index_search(
                self.inner.inner_ptr(),
                nq as faiss_sys::idx_t,
                queries.as_ptr(),
                k as faiss_sys::idx_t,
                distances.as_mut_ptr(),
                labels.as_mut_ptr(),
            )
        };
        if rc != 0 {
            return Err(Error::internal(format!("index: FAISS search failed: {}", last_faiss_error())));
        }
        Ok((0..nq)
            .map(|q| {
                (q * k..(q + 1) * k).filter(|&j| labels[j] >= 0).map(|j| (labels[j] as i64, distances[j])).collect()
            })
            .collect())
    }

    /// Change the search parameters.
    pub fn set_search_params(&mut self, params: SearchParams) -> Result<()> {
        self.params = params;
        self.apply_params()
    }

    /// The current search parameters.
    pub fn search_params(&self) -> SearchParams {
        self.params
    }

    /// Number of indexed vectors.
    pub fn len(&self) -> usize {
        self.inner.ntotal() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of IVF lists, when the index is an IVF index (also behind an IDMap).
    pub fn nlist(&self) -> Option<usize> {
        ivf_nlist(&self.inner).or_else(|| {
            // SAFETY: casts of a live index pointer; null when it is not an IDMap.
            unsafe {
                let idmap = faiss_sys::faiss_IndexIDMap_cast(self.inner.inner_ptr());
                if idmap.is_null() {
                    return None;
                }
                let sub = faiss_sys::faiss_IndexIDMap_sub_index(idmap);
                ivf_nlist_ptr(sub)
            }
        })
    }

    fn apply_params(&mut self) -> Result<()> {
        let space = faiss::index::autotune::ParameterSpace::new()
            .map_err(|e| Error::internal(format!("index: ParameterSpace: {}", faiss_message(&e))))?;
        if let Some(nlist) = self.nlist() {
            let nprobe = self.params.nprobe.clamp(1, nlist.max(1));
            space
                .set_index_parameter(&self.inner, "nprobe", nprobe as f64)
                .map_err(|e| Error::internal(format!("index: setting nprobe = {nprobe}: {}", faiss_message(&e))))?;
        }
        // efSearch applies to HNSW indexes (and HNSW coarse quantizers); FAISS rejects it for the others,
        // which is fine: there is nothing to set.
        let ef = self.params.ef_search.max(1);
        let _ = space.set_index_parameter(&self.inner, "efSearch", ef as f64);
        Ok(())
    }
}

/// Number of rows in `data`, checking it is a whole number of `dim`-float rows.
fn check_vectors(dim: usize, data: &[f32], what: &str) -> Result<usize> {
    if dim == 0 {
        return Err(Error::Usage("index: the vector dimension must be positive".into()));
    }
    if data.len() % dim != 0 {
        return Err(Error::Usage(format!(
            "index: {what} hold {} floats, not a multiple of the dimension {dim}",
            data.len()
        )));
    }
    Ok(data.len() / dim)
}

fn check_ids(ids: &[i64], n: usize) -> Result<()> {
    if ids.len() != n {
        return Err(Error::Usage(format!("index: {} ids for {n} vectors", ids.len())));
    }
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    for (row, &id) in ids.iter().enumerate() {
        if id < 0 {
            return Err(Error::Usage(format!("index: id {id} of row {row} is negative")));
        }
        if !seen.insert(id) {
            return Err(Error::Usage(format!("index: id {id} of row {row} is used twice")));
        }
    }
    Ok(())
}

/// FAISS's OpenMP threads for one search call. FAISS opens a parallel region per search even for a single query
/// (`IndexFlat` splits over queries, `IndexHNSW` opens one for its visited tables), so one query wakes every
/// OpenMP thread and waits at the region's end for all of them, though only one has work. When the other cores
/// are busy (ONNX Runtime's threads still spin just after encoding the query), the idle threads are scheduled
/// at the next timer tick: single-query p50 on the 100k HNSW32 index was 8.0 ms, a multiple of the 4 ms tick.
/// A single-query search therefore runs its region on the calling thread alone. OpenMP keeps this setting per
/// thread, so concurrent searches on other threads (and batched searches) keep every thread.
mod omp {
    use std::os::raw::c_int;

    // libgomp: linked by FAISS already (libfaiss_c.so needs it); named here because these two are called directly.
    #[link(name = "gomp")]
    extern "C" {
        fn omp_set_num_threads(n: c_int);
        fn omp_get_max_threads() -> c_int;
    }

    /// Sets this thread's OpenMP team size to 1 until dropped, then restores the previous size.
    pub(super) struct OneThread(c_int);

    impl OneThread {
        pub(super) fn enter() -> OneThread {
            // SAFETY: plain OpenMP runtime calls; they change only the calling thread's ICV.
            let before = unsafe { omp_get_max_threads() };
            unsafe { omp_set_num_threads(1) };
            OneThread(before)
        }
    }

    impl Drop for OneThread {
        fn drop(&mut self) {
            // SAFETY: as above.
            unsafe { omp_set_num_threads(self.0) };
        }
    }

    #[cfg(test)]
    pub(super) fn max_threads() -> c_int {
        // SAFETY: as above.
        unsafe { omp_get_max_threads() }
    }
}

fn ivf_nlist(index: &IndexImpl) -> Option<usize> {
    ivf_nlist_ptr(index.inner_ptr())
}

fn ivf_nlist_ptr(ptr: *mut faiss_sys::FaissIndex) -> Option<usize> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a dynamic cast of a live index pointer; null when it is not an IVF index.
    unsafe {
        let ivf = faiss_sys::faiss_IndexIVF_cast(ptr);
        if ivf.is_null() {
            None
        } else {
            Some(faiss_sys::faiss_IndexIVF_nlist(ivf))
        }
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| Error::Usage(format!("{}: FAISS needs a UTF-8 path", path.display())))
}

/// The message of the last FAISS error on this thread.
fn last_faiss_error() -> String {
    // SAFETY: FAISS returns a thread-local C string (or null) valid until the next FAISS call.
    let msg = unsafe {
        let p = faiss_sys::faiss_get_last_error();
        if p.is_null() {
            return "unknown error".into();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    clean_message(&msg)
}

fn faiss_message(e: &faiss::error::Error) -> String {
    match e {
        faiss::error::Error::Native(n) => clean_message(n.msg()),
        other => other.to_string(),
    }
}

/// FAISS read failures read "Error: 'ret == (size)' failed: read error in <path>: 12799 != 12800 (<stale
/// errno text>)"; say what it means instead.
fn read_failure(msg: &str) -> String {
    let msg = match (msg.strip_prefix("Error: '"), msg.find("' failed: ")) {
        (Some(_), Some(i)) => &msg[i + "' failed: ".len()..],
        _ => msg,
    };
    if msg.starts_with("read error in ") {
        if let Some(tail) = msg.rsplit(": ").next() {
            let tail = tail.split(" (").next().unwrap_or(tail);
            if let Some((got, want)) = tail.split_once(" != ") {
                return format!("the file ends early (read {got} of {want} items of a field)");
            }
        }
        return "the file ends early".into();
    }
    msg.to_string()
}

/// FAISS messages read "Error in <C++ signature> at <file>.cpp:<line>: <message>"; keep the message.
fn clean_message(msg: &str) -> String {
    let msg = msg.trim();
    if let Some(at) = msg.find(".cpp:") {
        let rest = &msg[at + 5..];
        if let Some(colon) = rest.find(": ") {
            return rest[colon + 2..].trim().to_string();
        }
    }
    msg.to_string()
}

#[cfg(test)]
mod tests;
