//! Reading a sentence-transformers model directory (the contract between training and export).
//!
//! What: `Transformer → Pooling(mean) → [Dense] → Normalize`, plus coltrast's optional token head.
//!
//! Inputs (a directory):
//! - `config.json` (HF BERT or MPNet config: `model_type` `"bert"` or `"mpnet"`) and `model.safetensors` (HF
//!   keys, no `bert.`/`mpnet.` prefix; a `bert.` prefix is accepted too; MPNet: `encoder.layer.N.attention.attn.*`,
//!   `encoder.relative_attention_bias`, no token type embeddings);
//! - `sentence_bert_config.json` (`max_seq_length`; default: `max_position_embeddings`);
//! - `modules.json` (optional; locates the Pooling / Dense modules; without it `1_Pooling` and, when
//!   present, `2_Dense` are used; with it, a Dense module is used only when listed);
//! - `1_Pooling/config.json` (optional; must be mean pooling when present);
//! - `2_Dense/config.json` + `2_Dense/model.safetensors` (optional; `linear.weight` [D, H], `linear.bias`
//!   [D]; activation Identity or Tanh);
//! - `coltrast_token_head.safetensors` (optional; `weight` [T, H], `bias` [T]) and `coltrast.json`
//!   (`embedding_dim`, `token_dim`, checked against the weights when present).
//!
//! Outputs: [`SentenceModel`], the config plus all weights as f32, HF `[out, in]` layout.
//!
//! Example:
//! ```no_run
//! let m = coltrast::onnx::SentenceModel::load(std::path::Path::new("models/all-MiniLM-L6-v2"))?;
//! assert_eq!(m.config.hidden_size, 384);
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::safetensors::Weights;
use crate::error::{Error, IoContext, Result};

/// The fields of an HF BERT or MPNet `config.json` that the graph needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `"bert"` (or absent, for older files) or `"mpnet"`; any other type is refused. Optional keys default as
    /// transformers' config class of that type (MPNet: `layer_norm_eps` 1e-5, `pad_token_id` 1).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Padding id; MPNet's positions start after it. Default 0 (BERT), 1 (MPNet).
    #[serde(default)]
    pub pad_token_id: usize,
    /// MPNet only: rows of `encoder.relative_attention_bias`. Default 32.
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

fn default_buckets() -> usize {
    32
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}
fn default_pos_type() -> String {
    "absolute".into()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).at(path)?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        Error::data(path, if at == "." { "(root)".to_string() } else { at }, e.inner().to_string())
    })
}

impl BertConfig {
    pub fn from_file(path: &Path) -> Result<BertConfig> {
        let mut v: serde_json::Value = read_json(path)?;
        let bad = |k: &str, m: String| Err(Error::data(path, k, m));
        match v.get("model_type") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(t)) if t == "bert" || t == "mpnet" => {}
            Some(t) => return bad("model_type", format!("{t} is not supported; supported: bert, mpnet")),
        }
        if v["model_type"] == "mpnet" {
            let o = v.as_object_mut().expect("a config with a model_type is an object");
            o.entry("layer_norm_eps").or_insert(serde_json::json!(1e-5));
            o.entry("pad_token_id").or_insert(serde_json::json!(1));
        }
        let c: BertConfig = serde_path_to_error::deserialize(v).map_err(|e| {
            let at = e.path().to_string();
            Error::data(path, if at == "." { "(root)".to_string() } else { at }, e.inner().to_string())
        })?;
        if c.is_mpnet() && c.relative_attention_num_buckets < MPNET_BUCKETS {
            return bad(
                "relative_attention_num_buckets",
                format!("{} is fewer than the {MPNET_BUCKETS} buckets MPNet uses", c.relative_attention_num_buckets),
            );
        }
        if c.is_mpnet() && c.max_positions() < 2 {
            return bad("max_position_embeddings", "leaves no positions after the padding id".into());
        }
        if c.hidden_size == 0 || c.num_attention_heads == 0 || c.hidden_size % c.num_attention_heads != 0 {
            return bad(
                "hidden_size",
                format!(
                    "{} is not a positive multiple of num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            );
        }
        if c.hidden_act != "gelu" {
            return bad("hidden_act", format!("{:?} is not supported (only exact \"gelu\")", c.hidden_act));
        }
        if c.position_embedding_type != "absolute" {
            return bad(
                "position_embedding_type",
                format!("{:?} is not supported (only \"absolute\")", c.position_embedding_type),
            );
        }
        if c.num_hidden_layers == 0 || c.vocab_size == 0 || c.max_position_embeddings == 0 || c.type_vocab_size == 0 {
            return bad("num_hidden_layers", "layers, vocab, positions and token types must be positive".into());
        }
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// `model_type = "mpnet"`: relative position bias, positions after the padding id, no token types.
    pub fn is_mpnet(&self) -> bool {
        self.model_type.as_deref() == Some("mpnet")
    }

    /// The longest input the position table covers: `max_position_embeddings` (BERT); MPNet's positions run
    /// from `pad_token_id + 1`, so `max_position_embeddings - pad_token_id - 1`.
    pub fn max_positions(&self) -> usize {
        if self.is_mpnet() {
            self.max_position_embeddings.saturating_sub(self.pad_token_id + 1)
        } else {
            self.max_position_embeddings
        }
    }
}

/// Buckets of MPNet's relative position bias (transformers' `compute_position_bias` always uses 32).
pub const MPNET_BUCKETS: usize = 32;
/// Distances from this on share the last bucket of their direction.
pub const MPNET_MAX_DISTANCE: i64 = 128;

/// transformers' `MPNetEncoder.relative_position_bucket` for one relative position (`key - query`), in float32
/// as torch computes it: keys before the query use buckets 0..16, keys after 16..32; distances 0..8 have a
/// bucket each, longer ones `8 + trunc(ln(n / 8) / ln(16) * 8)`, capped at 15.
pub fn mpnet_bucket(relative_position: i64) -> i64 {
    let half = MPNET_BUCKETS as i64 / 2;
    let max_exact = half / 2;
    let n = -relative_position;
    let ret = if n < 0 { half } else { 0 };
    let n = n.abs();
    if n < max_exact {
        return ret + n;
    }
    let log_ratio = (MPNET_MAX_DISTANCE as f64 / max_exact as f64).ln() as f32;
    let large = ((n as f32 / max_exact as f32).ln() / log_ratio * (half - max_exact) as f32) as i64;
    ret + (max_exact + large).min(half - 1)
}

/// A linear layer in HF layout: `weight` is `[out, in]` row-major.
#[derive(Debug, Clone)]
pub struct Linear {
    pub out_features: usize,
    pub in_features: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Linear {
    fn load(w: &Weights, prefix: &str, out_f: usize, in_f: usize) -> Result<Linear> {
        Ok(Linear {
            out_features: out_f,
            in_features: in_f,
            weight: w.f32_shaped(&format!("{prefix}.weight"), &[out_f, in_f])?,
            bias: w.f32_shaped(&format!("{prefix}.bias"), &[out_f])?,
        })
    }

    /// The weight transposed to `[in, out]` (what ONNX `MatMul(x, W)` needs).
    pub fn weight_t(&self) -> Vec<f32> {
        let mut t = vec![0f32; self.weight.len()];
        for o in 0..self.out_features {
            for i in 0..self.in_features {
                t[i * self.out_features + o] = self.weight[o * self.in_features + i];
            }
        }
        t
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

impl LayerNorm {
    fn load(w: &Weights, prefix: &str, h: usize) -> Result<LayerNorm> {
        Ok(LayerNorm {
            gamma: w.f32_shaped(&format!("{prefix}.weight"), &[h])?,
            beta: w.f32_shaped(&format!("{prefix}.bias"), &[h])?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub attn_out: Linear,
    pub attn_norm: LayerNorm,
    pub intermediate: Linear,
    pub output: Linear,
    pub out_norm: LayerNorm,
}

/// Activation of the optional Dense module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenseActivation {
    Identity,
    Tanh,
}

#[derive(Debug, Clone)]
pub struct DenseHead {
    pub linear: Linear,
    pub activation: DenseActivation,
}

/// A whole sentence model, weights in memory.
#[derive(Debug, Clone)]
pub struct SentenceModel {
    pub dir: PathBuf,
    pub config: BertConfig,
    pub max_seq_length: usize,
    pub word_embeddings: Vec<f32>,
    pub position_embeddings: Vec<f32>,
    /// BERT's token type table `[type_vocab_size, H]`; empty for MPNet.
    pub token_type_embeddings: Vec<f32>,
    /// MPNet's relative attention bias table `[buckets, heads]`, shared by all layers; `None` for BERT.
    pub relative_attention_bias: Option<Vec<f32>>,
    pub embeddings_norm: LayerNorm,
    pub layers: Vec<EncoderLayer>,
    pub dense: Option<DenseHead>,
    pub token_head: Option<Linear>,
    /// Whether modules.json lists a Normalize module (the export normalises either way; see
    /// [`super::export`]).
    pub declares_normalize: bool,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(default)]
    path: String,
    #[serde(rename = "type", default)]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    #[serde(default = "default_dense_act")]
    activation_function: String,
}

fn yes() -> bool {
    true
}
fn default_dense_act() -> String {
    "torch.nn.modules.activation.Tanh".into()
}

#[derive(Deserialize)]
struct ColtrastJson {
    embedding_dim: Option<usize>,
    token_dim: Option<usize>,
}

/// Where a model directory's Pooling and Dense modules are, and what its modules.json says.
struct Modules {
    pooling_dir: PathBuf,
    dense_dir: Option<PathBuf>,
    /// Whether modules.json lists a Normalize module (true without modules.json).
    declares_normalize: bool,
    /// Whether there is a modules.json (a Dense module it lists must exist).
    listed: bool,
}

/// Reads modules.json: where the Pooling and Dense modules live (without modules.json: 1_Pooling and
/// 2_Dense when present; with it: only what it lists).
fn read_modules(dir: &Path) -> Result<Modules> {
    let mut m = Modules {
        pooling_dir: dir.join("1_Pooling"),
        dense_dir: Some(dir.join("2_Dense")),
        declares_normalize: true,
        listed: false,
    };
    let modules_path = dir.join("modules.json");
    if !modules_path.is_file() {
        return Ok(m);
    }
    let modules: Vec<ModuleEntry> = read_json(&modules_path)?;
    m.listed = true;
    m.declares_normalize = modules.iter().any(|e| e.kind.ends_with("Normalize"));
    m.dense_dir = None;
    for e in &modules {
        if e.kind.ends_with("Pooling") && !e.path.is_empty() {
            m.pooling_dir = dir.join(&e.path);
        } else if e.kind.ends_with("Dense") {
            if e.path.is_empty() {
                return Err(Error::data(&modules_path, "path", "the Dense module has no path"));
            }
            m.dense_dir = Some(dir.join(&e.path));
        }
    }
    Ok(m)
}

/// Refuses a Pooling config (when there is one) that is not plain mean pooling.
fn check_pooling(pooling_dir: &Path) -> Result<()> {
    let pool_cfg = pooling_dir.join("config.json");
    if pool_cfg.is_file() {
        let p: PoolingConfig = read_json(&pool_cfg)?;
        if !p.pooling_mode_mean_tokens
            || p.pooling_mode_cls_token
            || p.pooling_mode_max_tokens
            || p.pooling_mode_mean_sqrt_len_tokens
        {
            return Err(Error::data(&pool_cfg, "pooling_mode_mean_tokens", "only mean pooling is supported"));
        }
    }
    Ok(())
}

/// `max_seq_length` from sentence_bert_config.json (default: the model's positions), checked against them.
fn read_max_seq_length(dir: &Path, config: &BertConfig) -> Result<usize> {
    let st_path = dir.join("sentence_bert_config.json");
    let max_seq_length = if st_path.is_file() {
        let st: StConfig = read_json(&st_path)?;
        st.max_seq_length.unwrap_or(config.max_positions())
    } else {
        config.max_positions()
    };
    if max_seq_length == 0 || max_seq_length > config.max_positions() {
        return Err(Error::data(
            &st_path,
            "max_seq_length",
            format!("{max_seq_length} must be in 1..={} (the positions of the model)", config.max_positions()),
        ));
    }
    Ok(max_seq_length)
}

/// The Transformer module's weights, as [`SentenceModel`] holds them.
struct TransformerWeights {
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    token_type_embeddings: Vec<f32>,
    relative_attention_bias: Option<Vec<f32>>,
    embeddings_norm: LayerNorm,
    layers: Vec<EncoderLayer>,
}

/// Reads the embeddings and the encoder layers from `model.safetensors` (keys with or without a
/// `bert.`/`mpnet.` prefix).
fn load_transformer(dir: &Path, config: &BertConfig) -> Result<TransformerWeights> {
    let h = config.hidden_size;
    let st_file = dir.join("model.safetensors");
    if !st_file.is_file() {
        return Err(Error::Usage(format!(
            "{}: missing; the exporter reads safetensors weights only",
            st_file.display()
        )));
    }
    let w = Weights::open(&st_file)?;
    let prefixed = |p: &str| w.contains(&format!("{p}embeddings.word_embeddings.weight"));
    let p = match (prefixed(""), config.is_mpnet()) {
        (false, false) if prefixed("bert.") => "bert.",
        (false, true) if prefixed("mpnet.") => "mpnet.",
        _ => "",
    };
    let word_embeddings = w.f32_shaped(&format!("{p}embeddings.word_embeddings.weight"), &[config.vocab_size, h])?;
    let position_embeddings =
        w.f32_shaped(&format!("{p}embeddings.position_embeddings.weight"), &[config.max_position_embeddings, h])?;
    let (token_type_embeddings, relative_attention_bias) = if config.is_mpnet() {
        let shape = [config.relative_attention_num_buckets, config.num_attention_heads];
        (Vec::new(), Some(w.f32_shaped(&format!("{p}encoder.relative_attention_bias.weight"), &shape)?))
    } else {
        let shape = [config.type_vocab_size, h];
        (w.f32_shaped(&format!("{p}embeddings.token_type_embeddings.weight"), &shape)?, None)
    };
    let embeddings_norm = LayerNorm::load(&w, &format!("{p}embeddings.LayerNorm"), h)?;
    let layers = (0..config.num_hidden_layers)
        .map(|l| load_layer(&w, config, &format!("{p}encoder.layer.{l}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(TransformerWeights {
        word_embeddings,
        position_embeddings,
        token_type_embeddings,
        relative_attention_bias,
        embeddings_norm,
        layers,
    })
}

/// One encoder layer's tensors under `b` (`[prefix]encoder.layer.N`), by BERT's or MPNet's names.
fn load_layer(w: &Weights, config: &BertConfig, b: &str) -> Result<EncoderLayer> {
    let (h, inter) = (config.hidden_size, config.intermediate_size);
    let [q, k, v, ao, an] = if config.is_mpnet() {
        ["attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "attention.LayerNorm"]
    } else {
        [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
        ]
    };
    Ok(EncoderLayer {
        query: Linear::load(w, &format!("{b}.{q}"), h, h)?,
        key: Linear::load(w, &format!("{b}.{k}"), h, h)?,
        value: Linear::load(w, &format!("{b}.{v}"), h, h)?,
        attn_out: Linear::load(w, &format!("{b}.{ao}"), h, h)?,
        attn_norm: LayerNorm::load(w, &format!("{b}.{an}"), h)?,
        intermediate: Linear::load(w, &format!("{b}.intermediate.dense"), inter, h)?,
        output: Linear::load(w, &format!("{b}.output.dense"), h, inter)?,
        out_norm: LayerNorm::load(w, &format!("{b}.output.LayerNorm"), h)?,
    })
}

/// coltrast's token head from `coltrast_token_head.safetensors` (`weight` [T, H], `bias` [T]), if present.
fn load_token_head(dir: &Path, h: usize) -> Result<Option<Linear>> {
    let head_path = dir.join("coltrast_token_head.safetensors");
    if !head_path.is_file() {
        return Ok(None);
    }
    let hw = Weights::open(&head_path)?;
    let (shape, weight) = hw.f32("weight")?;
    if shape.len() != 2 || shape[1] != h || shape[0] == 0 {
        return Err(Error::data(&head_path, "tensor \"weight\"", format!("shape {shape:?}, expected [T, {h}]")));
    }
    let t = shape[0];
    let bias = hw.f32_shaped("bias", &[t])?;
    Ok(Some(Linear { out_features: t, in_features: h, weight, bias }))
}

/// Checks the dims coltrast.json states (when present) against the model's weights.
fn check_coltrast_json(dir: &Path, model: &SentenceModel) -> Result<()> {
    let cj = dir.join("coltrast.json");
    if !cj.is_file() {
        return Ok(());
    }
    let c: ColtrastJson = read_json(&cj)?;
    if let Some(d) = c.embedding_dim.filter(|&d| d != model.embedding_dim()) {
        return Err(Error::data(&cj, "embedding_dim", format!("{d}, but the weights give {}", model.embedding_dim())));
    }
    if let Some(t) = c.token_dim.filter(|&t| t != model.token_dim()) {
        return Err(Error::data(&cj, "token_dim", format!("{t}, but the weights give {}", model.token_dim())));
    }
    Ok(())
}

impl SentenceModel {
    /// Reads the model directory `dir` (see the module docs for what it must hold).
    pub fn load(dir: &Path) -> Result<SentenceModel> {
        if !dir.is_dir() {
            return Err(Error::Usage(format!("{}: model directory not found", dir.display())));
        }
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let h = config.hidden_size;
        let modules = read_modules(dir)?;
        check_pooling(&modules.pooling_dir)?;
        let max_seq_length = read_max_seq_length(dir, &config)?;
        let t = load_transformer(dir, &config)?;
        let dense = match &modules.dense_dir {
            Some(d) => Self::load_dense(d, h, modules.listed)?,
            None => None,
        };
        let token_head = load_token_head(dir, h)?;
        let model = SentenceModel {
            dir: dir.to_path_buf(),
            config,
            max_seq_length,
            word_embeddings: t.word_embeddings,
            position_embeddings: t.position_embeddings,
            token_type_embeddings: t.token_type_embeddings,
            relative_attention_bias: t.relative_attention_bias,
            embeddings_norm: t.embeddings_norm,
            layers: t.layers,
            dense,
            token_head,
            declares_normalize: modules.declares_normalize,
        };
        check_coltrast_json(dir, &model)?;
        Ok(model)
    }

    fn load_dense(dense_dir: &Path, h: usize, listed: bool) -> Result<Option<DenseHead>> {
        let cfg_path = dense_dir.join("config.json");
        if !cfg_path.is_file() {
            if listed {
                return Err(Error::Usage(format!(
                    "{}: missing (modules.json lists a Dense module)",
                    cfg_path.display()
                )));
            }
            return Ok(None);
        }
        let c: DenseConfig = read_json(&cfg_path)?;
        if c.in_features != h {
            return Err(Error::data(&cfg_path, "in_features", format!("{}, expected hidden_size {h}", c.in_features)));
        }
        if c.out_features == 0 {
            return Err(Error::data(&cfg_path, "out_features", "must be positive"));
        }
        let activation = match c.activation_function.rsplit('.').next().unwrap_or("") {
            "Identity" => DenseActivation::Identity,
            "Tanh" => DenseActivation::Tanh,
            _ => {
                return Err(Error::data(
                    &cfg_path,
                    "activation_function",
                    format!("{:?} is not supported (Identity or Tanh)", c.activation_function),
                ))
            }
        };
        let wpath = dense_dir.join("model.safetensors");
        if !wpath.is_file() {
            return Err(Error::Usage(format!("{}: missing (2_Dense has a config.json)", wpath.display())));
        }
        let w = Weights::open(&wpath)?;
        let weight = w.f32_shaped("linear.weight", &[c.out_features, h])?;
        let bias = if c.bias { w.f32_shaped("linear.bias", &[c.out_features])? } else { vec![0.0; c.out_features] };
        Ok(Some(DenseHead {
            linear: Linear { out_features: c.out_features, in_features: h, weight, bias },
            activation,
        }))
    }

    /// Width of `sentence_embedding`: the Dense head's `out_features`, else `hidden_size`.
    pub fn embedding_dim(&self) -> usize {
        self.dense.as_ref().map_or(self.config.hidden_size, |d| d.linear.out_features)
    }

    /// Width of `token_embeddings`: the token head's `T`, else `hidden_size`.
    pub fn token_dim(&self) -> usize {
        self.token_head.as_ref().map_or(self.config.hidden_size, |t| t.out_features)
    }
}
