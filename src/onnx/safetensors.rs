//! Safetensors weights, read and written through Hugging Face's `safetensors` crate (the version tch links, so
//! one copy is built).
//!
//! What: the crate parses and validates the header (JSON length, offsets that tile the data bytes exactly,
//! sizes that match dtype × shape); this module adds what the ONNX builder needs on top: float tensors of any
//! float dtype as f32, shape checks, and errors that name the file and the tensor.
//!
//! Inputs: a path. F32, F16, BF16 and F64 tensors are read (converted to f32); other dtypes are an error
//! when asked for.
//!
//! Outputs: [`Weights`] (name → shape + f32 data on demand); [`write_f32`] writes an F32 file atomically.
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

use safetensors::tensor::TensorInfo;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, IoContext, Result};

/// The tensors of one safetensors file, held in memory.
#[derive(Debug)]
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    entries: BTreeMap<String, TensorInfo>,
}

impl Weights {
    /// Read and index a safetensors file; a malformed header is an error naming the file.
    pub fn open(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).at(path)?;
        Self::from_bytes(path, bytes)
    }

    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Weights> {
        let (n, meta) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| Error::data(path, "safetensors header", format!("{e:?} ({} bytes)", bytes.len())))?;
        let entries = meta.tensors().into_iter().map(|(k, v)| (k, v.clone())).collect();
        Ok(Weights { path: path.to_path_buf(), data_start: 8 + n, bytes, entries })
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
        let (begin, end) = e.data_offsets;
        let raw = &self.bytes[self.data_start + begin..self.data_start + end];
        let data: Vec<f32> = match e.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                .collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(Error::data(
                    &self.path,
                    format!("tensor {name:?}"),
                    format!("dtype {other:?} is not a float type (F32, F16, BF16, F64)"),
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
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, data)| data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, shape, _), raw) in tensors.iter().zip(&bytes) {
        let view = safetensors::tensor::TensorView::new(Dtype::F32, shape.to_vec(), raw)
            .map_err(|e| Error::internal(format!("safetensors write {}: tensor {name:?}: {e:?}", path.display())))?;
        views.push((name.to_string(), view));
    }
    let out = safetensors::serialize(views, &None)
        .map_err(|e| Error::internal(format!("safetensors write {}: {e:?}", path.display())))?;
    crate::fsutil::write_atomic(path, &out)
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
    fn half_precision_tensors_read_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.safetensors");
        let h: Vec<u8> = [1.0f32, -2.0, 65504.0].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
        let b: Vec<u8> = [0.5f32, -3.0].iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
        let i: Vec<u8> = [7i32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("h", safetensors::tensor::TensorView::new(Dtype::F16, vec![3], &h).unwrap()),
            ("b", safetensors::tensor::TensorView::new(Dtype::BF16, vec![2], &b).unwrap()),
            ("i", safetensors::tensor::TensorView::new(Dtype::I32, vec![1], &i).unwrap()),
        ];
        std::fs::write(&p, safetensors::serialize(views, &None).unwrap()).unwrap();
        let w = Weights::open(&p).unwrap();
        assert_eq!(w.f32("h").unwrap(), (vec![3], vec![1.0, -2.0, 65504.0]));
        assert_eq!(w.f32("b").unwrap(), (vec![2], vec![0.5, -3.0]));
        let e = w.f32("i").unwrap_err().to_string();
        assert!(e.contains("h.safetensors") && e.contains("\"i\"") && e.contains("not a float type"), "{e}");
    }

    #[test]
    fn written_files_are_byte_stable_and_sorted_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (p, q) = (dir.path().join("p.safetensors"), dir.path().join("q.safetensors"));
        write_f32(&p, &[("z", &[1], &[1.0]), ("a", &[2], &[2.0, 3.0])]).unwrap();
        write_f32(&q, &[("a", &[2], &[2.0, 3.0]), ("z", &[1], &[1.0])]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap(), "input order does not matter");
        assert!(write_f32(&p, &[("a", &[3], &[1.0])]).is_err(), "3 values claimed, 1 given");
    }
}
