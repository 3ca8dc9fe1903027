//! Content hashes (blake3) and the stable encoding that fingerprints are built from.
//!
//! [`StableHasher`] feeds typed, length-prefixed values into blake3, so `("ab", "c")` and `("a", "bc")` differ,
//! table keys are visited in sorted order, and floats are hashed by their bits (never by formatting).
//!
//! [`HashCache`] remembers file hashes by (size, mtime, inode), as xvc does, so an unchanged 90 MB model is not
//! re-read on every run. `--verify` bypasses it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// blake3 over a stable, typed, length-prefixed encoding.
pub struct StableHasher(blake3::Hasher);

impl StableHasher {
    /// `domain` separates uses (fingerprints, content hashes, ...).
    pub fn new(domain: &str) -> Self {
        let mut h = StableHasher(blake3::Hasher::new());
        h.str(domain);
        h
    }

    fn tag(&mut self, t: u8) {
        self.0.update(&[t]);
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.tag(b'u');
        self.0.update(&v.to_le_bytes());
        self
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.tag(b'b');
        self.0.update(&(b.len() as u64).to_le_bytes());
        self.0.update(b);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.tag(b's');
        self.0.update(&(s.len() as u64).to_le_bytes());
        self.0.update(s.as_bytes());
        self
    }

    /// A settings value. Tables are visited in key order whatever their map type.
    pub fn value(&mut self, v: &toml::Value) -> &mut Self {
        match v {
            toml::Value::String(s) => {
                self.tag(b'S');
                self.str(s);
            }
            toml::Value::Integer(i) => {
                self.tag(b'I');
                self.0.update(&i.to_le_bytes());
            }
            toml::Value::Float(f) => {
                self.tag(b'F');
                // -0.0 and 0.0 mean the same setting.
                let f = if *f == 0.0 { 0.0f64 } else { *f };
                self.0.update(&f.to_bits().to_le_bytes());
            }
            toml::Value::Boolean(b) => {
                self.tag(b'B');
                self.0.update(&[*b as u8]);
            }
            toml::Value::Datetime(d) => {
                self.tag(b'D');
                self.str(&d.to_string());
            }
            toml::Value::Array(items) => {
                self.tag(b'A');
                self.0.update(&(items.len() as u64).to_le_bytes());
                for item in items {
                    self.value(item);
                }
            }
            toml::Value::Table(t) => {
                self.tag(b'T');
                let sorted: BTreeMap<&String, &toml::Value> = t.iter().collect();
                self.0.update(&(sorted.len() as u64).to_le_bytes());
                for (k, v) in sorted {
                    self.str(k);
                    self.value(v);
                }
            }
        }
        self
    }

    /// The hash read as a number in [0, 1) (its first 64 bits): for seeded, platform-independent draws such
    /// as a validation share.
    pub fn unit(&self) -> f64 {
        let hex = self.finish();
        u64::from_str_radix(&hex[..16], 16).unwrap_or(0) as f64 / 2f64.powi(64)
    }

    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// blake3 of a file's bytes (memory-mapped and multi-threaded for big files) and its size.
pub fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path).at(path)?;
    let size = fs::metadata(path).at(path)?.len();
    Ok((h.finalize().to_hex().to_string(), size))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: i128,
    inode: u64,
    blake3: String,
}

/// File hashes remembered by cheap metadata, persisted as JSON under the artifacts dir.
#[derive(Debug, Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, CacheEntry>,
    dirty: bool,
    /// When true, every file is re-hashed (`--verify`).
    pub bypass: bool,
}

fn meta_key(meta: &fs::Metadata) -> (u64, i128, u64) {
    use std::os::unix::fs::MetadataExt;
    let mtime_ns = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
    (meta.len(), mtime_ns, meta.ino())
}

impl HashCache {
    /// Load the cache at `path`; a missing or unreadable cache is simply empty (it is only an optimisation).
    pub fn load(path: PathBuf) -> Self {
        let entries = fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        HashCache { path: Some(path), entries, dirty: false, bypass: false }
    }

    pub fn in_memory() -> Self {
        HashCache::default()
    }

    /// blake3 and size of a file, from the cache when its metadata is unchanged.
    pub fn file(&mut self, path: &Path) -> Result<(String, u64)> {
        let meta = fs::metadata(path).at(path)?;
        let (size, mtime_ns, inode) = meta_key(&meta);
        let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()).display().to_string();
        if !self.bypass {
            if let Some(e) = self.entries.get(&key) {
                if e.size == size && e.mtime_ns == mtime_ns && e.inode == inode {
                    return Ok((e.blake3.clone(), size));
                }
            }
        }
        let (hash, size) = hash_file(path)?;
        self.entries.insert(key, CacheEntry { size, mtime_ns, inode, blake3: hash.clone() });
        self.dirty = true;
        Ok((hash, size))
    }

    /// Content hash of a file or a directory tree (relative names and file hashes, in sorted order), and the
    /// total size in bytes.
    pub fn path(&mut self, path: &Path) -> Result<(String, u64)> {
        let meta = fs::metadata(path).at(path)?;
        if meta.is_file() {
            return self.file(path);
        }
        let mut files = Vec::new();
        walk_files(path, path, &mut files)?;
        let mut h = StableHasher::new("coltrast-tree-v1");
        let mut total = 0;
        h.u64(files.len() as u64);
        for rel in &files {
            let (fh, size) = self.file(&path.join(rel))?;
            total += size;
            h.str(&rel.to_string_lossy()).str(&fh);
        }
        Ok((h.finish(), total))
    }

    /// Write the cache back (atomically) if it changed. Failure to save is not an error.
    pub fn save(&mut self) {
        let (Some(path), true) = (&self.path, self.dirty) else { return };
        if let Ok(bytes) = serde_json::to_vec(&self.entries) {
            let _ = crate::fsutil::write_atomic(path, &bytes);
        }
        self.dirty = false;
    }
}

/// Relative paths of all regular files under `dir`, sorted, skipping hidden entries.
pub fn walk_files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir).at(dir)?.collect::<std::io::Result<_>>().at(dir)?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let p = e.path();
        let ft = e.file_type().at(&p)?;
        if ft.is_dir() {
            walk_files(root, &p, out)?;
        } else if ft.is_file() || (ft.is_symlink() && p.is_file()) {
            out.push(p.strip_prefix(root).map_err(Error::internal)?.to_path_buf());
        }
    }
    if dir == root {
        out.sort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_prefix_separates_fields() {
        let a = StableHasher::new("t").str("ab").str("c").finish();
        let b = StableHasher::new("t").str("a").str("bc").finish();
        assert_ne!(a, b);
    }

    #[test]
    fn table_order_does_not_matter_but_values_do() {
        let x: toml::Value = toml::from_str("a = 1\nb = 0.7").unwrap();
        let y: toml::Value = toml::from_str("b = 0.7\na = 1").unwrap();
        let z: toml::Value = toml::from_str("b = 0.8\na = 1").unwrap();
        let h = |v: &toml::Value| StableHasher::new("t").value(v).finish();
        assert_eq!(h(&x), h(&y));
        assert_ne!(h(&x), h(&z));
        // An integer 1 and a float 1.0 are different settings values.
        let i: toml::Value = toml::from_str("a = 1").unwrap();
        let f: toml::Value = toml::from_str("a = 1.0").unwrap();
        assert_ne!(h(&i), h(&f));
    }

    #[test]
    fn cache_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        fs::write(&p, b"one").unwrap();
        let mut c = HashCache::load(dir.path().join("cache.json"));
        let (h1, _) = c.file(&p).unwrap();
        c.save();
        let mut c = HashCache::load(dir.path().join("cache.json"));
        assert_eq!(c.file(&p).unwrap().0, h1);
        fs::write(&p, b"two!").unwrap();
        let (h2, size) = c.file(&p).unwrap();
        assert_ne!(h1, h2);
        assert_eq!(size, 4);
        assert_eq!(h2, blake3::hash(b"two!").to_hex().to_string());
    }

    #[test]
    fn tree_hash_includes_names() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        fs::write(d1.path().join("a.md"), "x").unwrap();
        fs::write(d2.path().join("b.md"), "x").unwrap();
        let mut c = HashCache::in_memory();
        assert_ne!(c.path(d1.path()).unwrap().0, c.path(d2.path()).unwrap().0);
    }
}
