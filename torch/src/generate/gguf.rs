//! Reading a GGUF file (llama.cpp's model format) into float32 tensors.
//!
//! The `gguf` crate parses the header (metadata and tensor infos); this module finds where the tensor data
//! starts (the header's encoded length rounded up to `general.alignment`, 32 by default) and dequantizes each
//! tensor to float32. Supported tensor types: F32, F16, Q8_0, Q4_0 and Q4_1 (what the small instruction models
//! shipped as GGUF use; SmolLM2-135M-Instruct.Q4_1 has F32 norms, a Q8_0 embedding and Q4_1 matrices). Any other
//! type is a clear error naming the file and the tensor.
//!
//! Block layouts (32 weights per block, as ggml defines them):
//! - Q8_0: f16 scale `d`, 32 × i8 `q`; w = d·q.
//! - Q4_0: f16 `d`, 16 bytes of nibbles; w = d·(q − 8).
//! - Q4_1: f16 `d`, f16 `m`, 16 bytes of nibbles; w = d·q + m.
//!
//! In the nibble blocks, byte j holds weight j in its low nibble and weight j + 16 in its high nibble.
//!
//! GGUF lists dimensions fastest first (`ne[0]` is a row's length), so a `[ne0, ne1]` tensor becomes a row-major
//! torch tensor of shape `[ne1, ne0]`: `[out, in]` for a linear layer, as torch.nn.Linear stores it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gguf::{GGMLType, GGUFFile, GGUFMetadataValue};
use half::f16;

/// A parse or layout problem in a GGUF file (always names the file).
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a GGUF file or truncated header ({why})")]
    Parse { path: PathBuf, why: String },
    #[error("{path}: metadata key `{key}`: {why}")]
    Metadata { path: PathBuf, key: String, why: String },
    #[error("{path}: tensor `{name}`: {why}")]
    Tensor { path: PathBuf, name: String, why: String },
}

/// A metadata value as this module uses it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Strings(Vec<String>),
    Ints(Vec<i64>),
    Other,
}

/// One tensor's place in the file.
#[derive(Debug, Clone)]
struct TensorInfo {
    dims: Vec<u64>,
    kind: GGMLType,
    offset: u64,
}

/// A GGUF file read into memory: its metadata and its tensors, dequantized on request.
pub struct Gguf {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    metadata: HashMap<String, Value>,
    tensors: HashMap<String, TensorInfo>,
}

fn convert(v: &GGUFMetadataValue) -> Value {
    use GGUFMetadataValue as M;
    match v {
        M::Uint8(x) => Value::Int(*x as i64),
        M::Int8(x) => Value::Int(*x as i64),
        M::Uint16(x) => Value::Int(*x as i64),
        M::Int16(x) => Value::Int(*x as i64),
        M::Uint32(x) => Value::Int(*x as i64),
        M::Int32(x) => Value::Int(*x as i64),
        M::Uint64(x) => Value::Int(*x as i64),
        M::Int64(x) => Value::Int(*x),
        M::Float32(x) => Value::Float(*x as f64),
        M::Float64(x) => Value::Float(*x),
        M::Bool(x) => Value::Bool(*x),
        M::String(s) => Value::Str(s.clone()),
        M::Array(a) => {
            if a.value.iter().all(|e| matches!(e, M::String(_))) && !a.value.is_empty() {
                Value::Strings(
                    a.value.iter().map(|e| if let M::String(s) = e { s.clone() } else { String::new() }).collect(),
                )
            } else {
                let ints: Option<Vec<i64>> = a
                    .value
                    .iter()
                    .map(|e| match convert(e) {
                        Value::Int(i) => Some(i),
                        _ => None,
                    })
                    .collect();
                ints.map(Value::Ints).unwrap_or(Value::Other)
            }
        }
    }
}

/// Bytes a metadata value takes in the file after its type tag.
fn encoded_len(v: &GGUFMetadataValue) -> usize {
    use GGUFMetadataValue as M;
    match v {
        M::Uint8(_) | M::Int8(_) | M::Bool(_) => 1,
        M::Uint16(_) | M::Int16(_) => 2,
        M::Uint32(_) | M::Int32(_) | M::Float32(_) => 4,
        M::Uint64(_) | M::Int64(_) | M::Float64(_) => 8,
        M::String(s) => 8 + s.len(),
        M::Array(a) => 4 + 8 + a.value.iter().map(encoded_len).sum::<usize>(),
    }
}

/// (weights per block, bytes per block) of a supported type.
fn block_layout(kind: GGMLType) -> Option<(usize, usize)> {
    match kind {
        GGMLType::F32 => Some((1, 4)),
        GGMLType::F16 => Some((1, 2)),
        GGMLType::Q8_0 => Some((32, 34)),
        GGMLType::Q4_0 => Some((32, 18)),
        GGMLType::Q4_1 => Some((32, 20)),
        _ => None,
    }
}

/// Dequantize `n` weights of `kind` from `raw` (exactly the tensor's bytes).
pub fn dequantize(kind: GGMLType, raw: &[u8], n: usize) -> Option<Vec<f32>> {
    let (per_block, block_bytes) = block_layout(kind)?;
    if n % per_block != 0 || raw.len() != n / per_block * block_bytes {
        return None;
    }
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(n);
    match kind {
        GGMLType::F32 => out.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GGMLType::F16 => out.extend(raw.chunks_exact(2).map(h)),
        GGMLType::Q8_0 => {
            for b in raw.chunks_exact(block_bytes) {
                let d = h(&b[..2]);
                out.extend(b[2..].iter().map(|&q| d * (q as i8) as f32));
            }
        }
        GGMLType::Q4_0 | GGMLType::Q4_1 => {
            let with_min = kind == GGMLType::Q4_1;
            for b in raw.chunks_exact(block_bytes) {
                let d = h(&b[..2]);
                let (m, qs) = if with_min { (h(&b[2..4]), &b[4..]) } else { (-8.0 * d, &b[2..]) };
                let start = out.len();
                out.resize(start + 32, 0.0);
                for (j, &q) in qs.iter().enumerate() {
                    out[start + j] = d * (q & 0x0F) as f32 + m;
                    out[start + j + 16] = d * (q >> 4) as f32 + m;
                }
            }
        }
        _ => return None,
    }
    Some(out)
}

impl Gguf {
    /// Read and parse `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let bytes = std::fs::read(path).map_err(|source| GgufError::Io { path: path.to_path_buf(), source })?;
        let parse_err = |why: String| GgufError::Parse { path: path.to_path_buf(), why };
        let file = GGUFFile::read(&bytes).map_err(parse_err)?.ok_or_else(|| parse_err("incomplete".into()))?;
        let mut header_len = 4 + 4 + 8 + 8;
        let mut metadata = HashMap::new();
        for m in &file.header.metadata {
            header_len += 8 + m.key.len() + 4 + encoded_len(&m.value);
            metadata.insert(m.key.clone(), convert(&m.value));
        }
        let mut tensors = HashMap::new();
        for t in &file.tensors {
            header_len += 8 + t.name.len() + 4 + 8 * t.dimensions.len() + 4 + 8;
            tensors.insert(
                t.name.clone(),
                TensorInfo { dims: t.dimensions.clone(), kind: t.tensor_type, offset: t.offset },
            );
        }
        let alignment = match metadata.get("general.alignment") {
            Some(Value::Int(a)) if *a > 0 => *a as usize,
            None => 32,
            Some(other) => {
                return Err(GgufError::Metadata {
                    path: path.to_path_buf(),
                    key: "general.alignment".into(),
                    why: format!("expected a positive integer, got {other:?}"),
                })
            }
        };
        let data_start = header_len.div_ceil(alignment) * alignment;
        let g = Gguf { path: path.to_path_buf(), bytes, data_start, metadata, tensors };
        // every tensor must lie inside the file
        for (name, t) in &g.tensors {
            g.tensor_bytes(name, t)?;
        }
        Ok(g)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta_err(&self, key: &str, why: impl Into<String>) -> GgufError {
        GgufError::Metadata { path: self.path.clone(), key: key.into(), why: why.into() }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required integer.
    pub fn int(&self, key: &str) -> Result<i64, GgufError> {
        match self.get(key) {
            Some(Value::Int(i)) => Ok(*i),
            Some(v) => Err(self.meta_err(key, format!("expected an integer, got {v:?}"))),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required float (an integer is accepted).
    pub fn float(&self, key: &str) -> Result<f64, GgufError> {
        match self.get(key) {
            Some(Value::Float(f)) => Ok(*f),
            Some(Value::Int(i)) => Ok(*i as f64),
            Some(v) => Err(self.meta_err(key, format!("expected a number, got {v:?}"))),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required string.
    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(s),
            Some(v) => Err(self.meta_err(key, format!("expected a string, got {v:?}"))),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    /// A required array of strings.
    pub fn strings(&self, key: &str) -> Result<&[String], GgufError> {
        match self.get(key) {
            Some(Value::Strings(s)) => Ok(s),
            Some(_) => Err(self.meta_err(key, "expected an array of strings")),
            None => Err(self.meta_err(key, "missing")),
        }
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn tensor_bytes(&self, name: &str, t: &TensorInfo) -> Result<&[u8], GgufError> {
        let err = |why: String| GgufError::Tensor { path: self.path.clone(), name: name.into(), why };
        let n: u64 = t.dims.iter().product();
        let (per_block, block_bytes) =
            block_layout(t.kind).ok_or_else(|| err(format!("tensor type {:?} is not supported", t.kind)))?;
        if n % per_block as u64 != 0 {
            return Err(err(format!("{n} weights is not a whole number of {per_block}-weight blocks")));
        }
        let len = (n / per_block as u64) as usize * block_bytes;
        let start = self.data_start + t.offset as usize;
        self.bytes.get(start..start + len).ok_or_else(|| {
            err(format!("data at {start}..{} lies beyond the file's {} bytes", start + len, self.bytes.len()))
        })
    }

    /// The tensor `name` as float32, row-major, with its torch shape (GGUF dims reversed).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<i64>), GgufError> {
        let t = self.tensors.get(name).ok_or_else(|| GgufError::Tensor {
            path: self.path.clone(),
            name: name.into(),
            why: "missing".into(),
        })?;
        let raw = self.tensor_bytes(name, t)?;
        let n: u64 = t.dims.iter().product();
        let values = dequantize(t.kind, raw, n as usize).ok_or_else(|| GgufError::Tensor {
            path: self.path.clone(),
            name: name.into(),
            why: format!("cannot dequantize {:?}", t.kind),
        })?;
        let shape = t.dims.iter().rev().map(|&d| d as i64).collect();
        Ok((values, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16b(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q4_1_block_puts_low_nibbles_first_and_adds_the_minimum() {
        let mut b = Vec::new();
        b.extend(f16b(0.5));
        b.extend(f16b(-1.0));
        // byte j: low nibble j % 16, high nibble 15 - j % 16
        b.extend((0..16u8).map(|j| (j & 0x0F) | ((15 - j) << 4)));
        let w = dequantize(GGMLType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(w[j], 0.5 * j as f32 - 1.0, "weight {j}");
            assert_eq!(w[j + 16], 0.5 * (15 - j) as f32 - 1.0, "weight {}", j + 16);
        }
    }

    #[test]
    fn q4_0_centres_on_eight_and_q8_0_is_signed() {
        let mut b = Vec::new();
        b.extend(f16b(2.0));
        b.extend([0x80u8; 16]); // low 0, high 8
        let w = dequantize(GGMLType::Q4_0, &b, 32).unwrap();
        assert_eq!(w[0], -16.0);
        assert_eq!(w[16], 0.0);
        let mut b = Vec::new();
        b.extend(f16b(0.25));
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let w = dequantize(GGMLType::Q8_0, &b, 32).unwrap();
        assert_eq!(w[0], -4.0);
        assert_eq!(w[31], 3.75);
    }

    #[test]
    fn wrong_length_or_unsupported_type_is_refused() {
        assert!(dequantize(GGMLType::Q4_1, &[0u8; 19], 32).is_none());
        assert!(dequantize(GGMLType::Q8_0, &[0u8; 34], 31).is_none());
        assert!(dequantize(GGMLType::Q4K, &[0u8; 144], 256).is_none());
    }
}
