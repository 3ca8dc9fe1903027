//! The trained model as a sentence-transformers model dir, which `SentenceTransformer(path)` loads as is:
//!
//! ```text
//! config.json, model.safetensors           BERT (HF key names, no prefix; untrained tensors of the base such
//!                                          as pooler.* are copied unchanged)
//! tokenizer.json, vocab.txt, ...           copied from the base model
//! sentence_bert_config.json                copied (max_seq_length)
//! config_sentence_transformers.json        copied when the base has one
//! modules.json                             Transformer → Pooling → Dense → Normalize
//! 1_Pooling/config.json                    mean pooling (the base's)
//! 2_Dense/config.json, model.safetensors   linear.weight [D, H], linear.bias [D], identity activation
//! 3_Normalize/                             (empty)
//! coltrast_token_head.safetensors          weight [T, H], bias [T]: the late-interaction head
//! coltrast.json                            dims, loss weights, temperature, MaxSim scale/shift, base hash
//! ```
//!
//! Safetensors files are written with Hugging Face's `safetensors` crate (not by tch) so they carry
//! `{"format": "pt"}` metadata like files saved by PyTorch, and their bytes depend only on the tensors.

use std::fs;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::model::ColTrastModel;
use crate::encoder::{Encoder, ModelConfig};
use coltrast::error::{Error, IoContext, Result};

pub const TOKEN_HEAD: &str = "coltrast_token_head.safetensors";
pub const COLTRAST_JSON: &str = "coltrast.json";
/// Files of the base model copied as they are, when present.
const COPIED: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
];

/// `coltrast.json`: what the late-interaction side needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColtrastMeta {
    pub embedding_dim: usize,
    pub token_dim: usize,
    pub temperature: f64,
    pub contrastive_weight: f64,
    pub late_interaction_weight: f64,
    /// blake3 of the base model dir (as in the manifest's inputs).
    pub base_model_blake3: String,
    /// MaxSim logit = maxsim_scale × score + maxsim_shift (score: mean over query tokens of the max cosine).
    pub maxsim_scale: f64,
    pub maxsim_shift: f64,
    /// Which tokens MaxSim uses: "all non-padding tokens ([CLS], [SEP] and punctuation included)".
    pub maxsim_tokens: String,
}

pub const MAXSIM_TOKENS: &str = "all non-padding tokens ([CLS], [SEP] and punctuation included)";

fn dtype(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        other => return Err(Error::internal(format!("cannot write {other:?} tensors to safetensors"))),
    })
}

/// Writes a safetensors file through Hugging Face's `safetensors` crate (tensors by dtype, then name; header
/// padded to 8 bytes) with `{"format": "pt"}` metadata.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let dt = dtype(t.kind())?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * dt.size()];
        t.f_copy_data_u8(&mut bytes, numel).map_err(|e| Error::internal(format!("{}: {name}: {e}", path.display())))?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        raw.push((name.as_str(), dt, shape, bytes));
    }
    let mut views = Vec::with_capacity(raw.len());
    for (name, dt, shape, bytes) in &raw {
        let view = TensorView::new(*dt, shape.clone(), bytes)
            .map_err(|e| Error::internal(format!("{}: {name}: {e:?}", path.display())))?;
        views.push((*name, view));
    }
    let meta = Some(std::collections::HashMap::from([("format".to_string(), "pt".to_string())]));
    let out =
        safetensors::serialize(views, &meta).map_err(|e| Error::internal(format!("{}: {e:?}", path.display())))?;
    fs::write(path, out).at(path)
}

fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path).map_err(|e| Error::Usage(format!("{}: unreadable safetensors: {e}", path.display())))
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(Error::internal)?;
    bytes.push(b'\n');
    fs::write(path, bytes).at(path)
}

/// Writes the model dir `out` (created) from the trained model and the base model dir it started from.
pub fn write_model_dir(out: &Path, base: &Path, model: &ColTrastModel, meta: &ColtrastMeta) -> Result<()> {
    fs::create_dir_all(out).at(out)?;
    for name in COPIED {
        let src = base.join(name);
        if src.is_file() {
            fs::copy(&src, out.join(name)).at(&src)?;
        }
    }
    // BERT weights: the base file's tensors, trained ones replaced.
    let base_weights = base.join("model.safetensors");
    let trained: std::collections::HashMap<String, Tensor> =
        model.encoder().var_store().variables().into_iter().collect();
    let mut tensors = Vec::new();
    for (name, t) in read_tensors(&base_weights)? {
        match trained.get(&name) {
            Some(v) => tensors.push((name, v.detach().to_kind(t.kind()))),
            None => tensors.push((name, t)),
        }
    }
    write_safetensors(&out.join("model.safetensors"), &tensors)?;

    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    write_json(&out.join("modules.json"), &modules)?;

    let h = model.encoder().dim();
    let pooling = out.join("1_Pooling");
    fs::create_dir_all(&pooling).at(&pooling)?;
    let base_pooling = base.join("1_Pooling").join("config.json");
    if base_pooling.is_file() {
        fs::copy(&base_pooling, pooling.join("config.json")).at(&base_pooling)?;
    } else {
        let cfg = serde_json::json!({
            "word_embedding_dimension": h,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false
        });
        write_json(&pooling.join("config.json"), &cfg)?;
    }

    let dense = out.join("2_Dense");
    fs::create_dir_all(&dense).at(&dense)?;
    let (dw, db) = model.dense();
    let cfg = serde_json::json!({
        "in_features": h,
        "out_features": model.embedding_dim(),
        "bias": true,
        "activation_function": "torch.nn.modules.linear.Identity"
    });
    write_json(&dense.join("config.json"), &cfg)?;
    write_safetensors(
        &dense.join("model.safetensors"),
        &[("linear.weight".into(), dw.shallow_clone()), ("linear.bias".into(), db.shallow_clone())],
    )?;
    let normalize = out.join("3_Normalize");
    fs::create_dir_all(&normalize).at(&normalize)?;

    let (tw, tb) = model.token_head();
    write_safetensors(
        &out.join(TOKEN_HEAD),
        &[("weight".into(), tw.shallow_clone()), ("bias".into(), tb.shallow_clone())],
    )?;
    write_json(&out.join(COLTRAST_JSON), meta)
}

/// Loads a model dir written by [`write_model_dir`] (encoder, both heads and the MaxSim affine).
pub fn load_model_dir(dir: &Path, device: Device) -> Result<(ColTrastModel, ColtrastMeta)> {
    let config = ModelConfig::from_file(&dir.join("config.json")).map_err(Error::from)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| Error::Usage(format!("{}: unreadable tokenizer: {e}", tok_path.display())))?;
    let sb = dir.join("sentence_bert_config.json");
    let max_seq = match fs::read(&sb) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("max_seq_length").and_then(|x| x.as_u64()))
            .unwrap_or(config.max_positions() as u64) as usize,
        Err(_) => config.max_positions() as usize,
    };
    let max_seq = max_seq.min(config.max_positions() as usize);
    let mut encoder = Encoder::random(config, tokenizer, max_seq, device, 0).map_err(Error::from)?;
    let weights = dir.join("model.safetensors");
    encoder
        .var_store_mut()
        .load(&weights)
        .map_err(|e| Error::Usage(format!("{}: cannot load weights: {e}", weights.display())))?;
    encoder.var_store_mut().float();
    let meta_path = dir.join(COLTRAST_JSON);
    let meta: ColtrastMeta = serde_json::from_slice(&fs::read(&meta_path).at(&meta_path)?)
        .map_err(|e| Error::Usage(format!("{}: {e}", meta_path.display())))?;
    let get = |list: &[(String, Tensor)], name: &str, path: &Path| -> Result<Tensor> {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| Error::Usage(format!("{}: tensor {name} missing", path.display())))
    };
    let dense_path = dir.join("2_Dense").join("model.safetensors");
    let dense = read_tensors(&dense_path)?;
    let head_path = dir.join(TOKEN_HEAD);
    let head = read_tensors(&head_path)?;
    let model = ColTrastModel::from_parts(
        encoder,
        (get(&dense, "linear.weight", &dense_path)?, get(&dense, "linear.bias", &dense_path)?),
        (get(&head, "weight", &head_path)?, get(&head, "bias", &head_path)?),
        meta.maxsim_scale,
        meta.maxsim_shift,
    )?;
    Ok((model, meta))
}
