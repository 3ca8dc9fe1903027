//! A minimal safetensors reader and writer for float weights.
//!
//! What: the file is an 8-byte little-endian header length `n`, `n` bytes of JSON
//! (`{"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}}`) and the
//! raw little-endian tensor bytes, offsets relative to the end of the header.
//!
//! Inputs: a path. F32, F16, BF16 and F64 tensors are read (converted to f32); other dtypes are an error
//! when asked for. Every header entry is checked against the file size when the file is opened.
//!
//! Outputs: [`Weights`] (name → shape + f32 data on demand); [`write_f32`] writes an F32 file.
//!
//! Example:
//! ```no_run
//! use coltrast::onnx::safetensors::Weights;
//! let w = Weights::open(std::path::Path::new("model.safetensors"))?;
//! let (shape, data) = w.f32("embeddings.word_embeddings.weight")?;
//! assert_eq!(data.len(), shape.iter().product::<usize>());
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// The tensors of one safetensors file, held in memory.
#[derive(Debug)]
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    entries: BTreeMap<String, Entry>,
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F64" | "I64" | "U64" => 8,
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "I8" | "U8" | "BOOL" => 1,
        _ => return None,
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) & 1) as u32;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign << 31
        } else {
            // subnormal: value = mant * 2^-24
            let v = mant as f32 * (1.0 / 16_777_216.0);
            return if sign == 1 { -v } else { v };
        }
    } else if exp == 0x1f {
        (sign << 31) | 0x7f80_0000 | (mant << 13)
    } else {
        (sign << 31) | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

impl Weights {
    /// Read and index a safetensors file.
    pub fn open(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).at(path)?;
        Self::from_bytes(path, bytes)
    }

    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Weights> {
        let bad = |m: String| Error::data(path, "safetensors header", m);
        if bytes.len() < 8 {
            return Err(bad(format!("file is {} bytes, shorter than the 8-byte header length", bytes.len())));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[..8]);
        let n = u64::from_le_bytes(len8);
        let data_start =
            8u64.checked_add(n).filter(|&e| e <= bytes.len() as u64).ok_or_else(|| {
                bad(format!("header length {n} runs past the end of the file ({} bytes)", bytes.len()))
            })? as usize;
        let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..data_start])
            .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
        let data_len = bytes.len() - data_start;
        let mut entries = BTreeMap::new();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let rec = |m: &str| Error::data(path, format!("tensor {name:?}"), m.to_string());
            let dtype = v.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| rec("missing dtype"))?.to_string();
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| rec("missing shape"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| rec("shape must hold non-negative integers"))?;
            let offs: Vec<usize> = v
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .ok_or_else(|| rec("missing data_offsets"))?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| rec("data_offsets must be two non-negative integers"))?;
            if offs.len() != 2 || offs[0] > offs[1] || offs[1] > data_len {
                return Err(rec(&format!("data_offsets {offs:?} outside the {data_len} data bytes")));
            }
            if let Some(sz) = dtype_size(&dtype) {
                let want = shape.iter().product::<usize>() * sz;
                if offs[1] - offs[0] != want {
                    return Err(rec(&format!(
                        "{} bytes for shape {shape:?} of {dtype}, expected {want}",
                        offs[1] - offs[0]
                    )));
                }
            }
            entries.insert(name, Entry { dtype, shape, begin: offs[0], end: offs[1] });
        }
        Ok(Weights { path: path.to_path_buf(), bytes, data_start, entries })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(|k| k.as_str())
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// A tensor as f32 with its shape; an error naming the file and tensor if it is absent or not a float.
    pub fn f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::data(&self.path, format!("tensor {name:?}"), "missing from the file"))?;
        let raw = &self.bytes[self.data_start + e.begin..self.data_start + e.end];
        let data: Vec<f32> = match e.dtype.as_str() {
            "F32" => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            "F64" => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            "F16" => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            "BF16" => {
                raw.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
            }
            other => {
                return Err(Error::data(
                    &self.path,
                    format!("tensor {name:?}"),
                    format!("dtype {other} is not a float type (F32, F16, BF16, F64)"),
                ))
            }
        };
        Ok((e.shape.clone(), data))
    }

    /// Like [`Weights::f32`] but also checks the shape.
    pub fn f32_shaped(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (s, d) = self.f32(name)?;
        if s != shape {
            return Err(Error::data(
                &self.path,
                format!("tensor {name:?}"),
                format!("shape {s:?}, expected {shape:?}"),
            ));
        }
        Ok(d)
    }
}

/// Write F32 tensors as a safetensors file (atomically). Names must be unique; data length must match shape.
pub fn write_f32(path: &Path, tensors: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in tensors {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::internal(format!(
                "safetensors write {}: tensor {name:?} has {} values for shape {shape:?}",
                path.display(),
                data.len()
            )));
        }
        let end = offset + 4 * n;
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut head = serde_json::to_vec(&header).map_err(Error::internal)?;
    while head.len() % 8 != 0 {
        head.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + head.len() + offset);
    bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&head);
    for (_, _, data) in tensors {
        for v in data.iter() {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    crate::fsutil::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        write_f32(&p, &[("a", &[2, 3], &[1., 2., 3., 4., 5., 6.]), ("b", &[1], &[-0.5])]).unwrap();
        let w = Weights::open(&p).unwrap();
        assert_eq!(w.f32("a").unwrap(), (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]));
        assert_eq!(w.f32_shaped("b", &[1]).unwrap(), vec![-0.5]);
        let e = w.f32("nope").unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("nope"), "{e}");
        let e = w.f32_shaped("a", &[3, 2]).unwrap_err().to_string();
        assert!(e.contains("expected [3, 2]"), "{e}");

        // truncated file: header entries that point past the end are rejected at open
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 4]).unwrap();
        let e = Weights::open(&p).unwrap_err().to_string();
        assert!(e.contains("w.safetensors"), "{e}");
        std::fs::write(&p, b"abc").unwrap();
        assert!(Weights::open(&p).is_err());
    }

    #[test]
    fn half_precision_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert!((f16_to_f32(0x0001) - 5.960_464_5e-8).abs() < 1e-12);
    }
}
