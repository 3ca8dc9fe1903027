//! `ModelConfig`: the architecture hyper-parameters, read from the model's `config.json` (the file and field
//! names of Hugging Face transformers' `BertConfig` and `MPNetConfig`).
//!
//! `model_type` (and, when present, `architectures`) decides which graph is built: `"bert"` ([`super::bert`]) or
//! `"mpnet"` ([`super::mpnet`]). Anything else is refused in one line that names the type found and the types
//! supported; a file whose `architectures` disagree with its `model_type` is refused too, so a checkpoint is
//! never run through the wrong graph. The fields both architectures share are plain fields of [`ModelConfig`];
//! what only one of them has is in [`Architecture`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EncoderError;

/// The `model_type`s this encoder builds, as config.json spells them.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert", "mpnet"];

/// Buckets of MPNet's relative position bias: transformers' `MPNetEncoder.compute_position_bias` always uses 32
/// (its default argument), whatever `relative_attention_num_buckets` says; that many rows are required.
pub const MPNET_NUM_BUCKETS: i64 = 32;

/// Activation of the feed-forward block (`hidden_act` in config.json).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU, `x * Φ(x)` with the error function: transformers' `"gelu"`.
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation: transformers' `"gelu_new"` / `"gelu_pytorch_tanh"`.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// `max(0, x)`: transformers' `"relu"`.
    #[serde(rename = "relu")]
    Relu,
}

/// What one architecture has and the other has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `model_type = "bert"` (all-MiniLM-L6-v2): absolute positions `0..s`, token type embeddings.
    Bert {
        /// Rows of `embeddings.token_type_embeddings`. Default 2.
        type_vocab_size: i64,
    },
    /// `model_type = "mpnet"` (all-mpnet-base-v2): positions counted from `pad_token_id + 1`, no token types,
    /// and a bucketed relative position bias shared by all layers.
    MPNet {
        /// Rows of `encoder.relative_attention_bias`. Default 32. transformers always buckets relative
        /// positions into 32 ([`MPNET_NUM_BUCKETS`]), so at least 32 are needed.
        relative_attention_num_buckets: i64,
    },
}

/// Hyper-parameters of a BERT-like encoder. Unknown keys in config.json are ignored (HF configs carry many);
/// optional keys default as in transformers' config class of that `model_type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(into = "RawConfig")]
pub struct ModelConfig {
    /// Which graph, with the fields only it has.
    pub arch: Architecture,
    /// Number of rows of `embeddings.word_embeddings`.
    pub vocab_size: i64,
    /// Width of every hidden state (384 for MiniLM-L6, 768 for MPNet-base).
    pub hidden_size: i64,
    /// Number of `encoder.layer.N` blocks.
    pub num_hidden_layers: i64,
    /// Number of attention heads; must divide `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block (`intermediate.dense`).
    pub intermediate_size: i64,
    /// Activation of the feed-forward block. Default `"gelu"` (exact, erf).
    pub hidden_act: HiddenAct,
    /// Number of rows of `embeddings.position_embeddings`.
    pub max_position_embeddings: i64,
    /// Epsilon of every LayerNorm. Default 1e-12 (BERT), 1e-5 (MPNet).
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and block outputs, used only when `train = true`. Default 0.1.
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities, used only when `train = true`. Default 0.1.
    pub attention_probs_dropout_prob: f64,
    /// Id of the padding token. Default 0 (BERT), 1 (MPNet, whose positions also start after it).
    pub pad_token_id: i64,
    /// Standard deviation of the normal init of fresh (random) weights. Default 0.02.
    pub initializer_range: f64,
}

/// config.json as written on disk: every optional key optional, so that defaults can follow `model_type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_type: Option<String>,
    vocab_size: i64,
    hidden_size: i64,
    num_hidden_layers: i64,
    num_attention_heads: i64,
    intermediate_size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hidden_act: Option<HiddenAct>,
    max_position_embeddings: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    type_vocab_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    layer_norm_eps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hidden_dropout_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attention_probs_dropout_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pad_token_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    initializer_range: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    position_embedding_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relative_attention_num_buckets: Option<i64>,
}

impl From<ModelConfig> for RawConfig {
    fn from(c: ModelConfig) -> RawConfig {
        let (type_vocab_size, position_embedding_type, buckets) = match c.arch {
            Architecture::Bert { type_vocab_size } => (Some(type_vocab_size), Some("absolute".to_string()), None),
            Architecture::MPNet { relative_attention_num_buckets } => {
                (None, None, Some(relative_attention_num_buckets))
            }
        };
        RawConfig {
            model_type: Some(c.model_type().to_string()),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            intermediate_size: c.intermediate_size,
            hidden_act: Some(c.hidden_act),
            max_position_embeddings: c.max_position_embeddings,
            type_vocab_size,
            layer_norm_eps: Some(c.layer_norm_eps),
            hidden_dropout_prob: Some(c.hidden_dropout_prob),
            attention_probs_dropout_prob: Some(c.attention_probs_dropout_prob),
            pad_token_id: Some(c.pad_token_id),
            initializer_range: Some(c.initializer_range),
            position_embedding_type,
            relative_attention_num_buckets: buckets,
        }
    }
}

/// The `model_type` an `architectures` entry belongs to (`"MPNetForMaskedLM"` → `"mpnet"`), by transformers'
/// class-name prefix; `None` for a class of another model type.
fn model_type_of_class(class: &str) -> Option<&'static str> {
    if class.starts_with("MPNet") {
        Some("mpnet")
    } else if class.starts_with("Bert") {
        Some("bert")
    } else {
        None
    }
}

/// Reads `model_type` and checks `architectures` against it (or infers it from them when absent).
fn detect_model_type(value: &serde_json::Value) -> Result<&'static str, (String, String)> {
    let supported = SUPPORTED_MODEL_TYPES.join(", ");
    let declared = match value.get("model_type") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => match SUPPORTED_MODEL_TYPES.iter().find(|s| **s == t) {
            Some(s) => Some(*s),
            None => return Err(("model_type".into(), format!("{t:?} is not supported; supported: {supported}"))),
        },
        Some(other) => return Err(("model_type".into(), format!("expected a string, got {other}"))),
    };
    let classes: Vec<(usize, &str)> = match value.get("architectures") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(list)) => {
            let mut out = Vec::new();
            for (i, c) in list.iter().enumerate() {
                let c =
                    c.as_str().ok_or_else(|| (format!("architectures[{i}]"), format!("expected a string, got {c}")))?;
                out.push((i, c));
            }
            out
        }
        Some(other) => return Err(("architectures".into(), format!("expected a list of class names, got {other}"))),
    };
    let mut inferred: Option<&'static str> = declared;
    for (i, class) in classes {
        let field = format!("architectures[{i}]");
        match (model_type_of_class(class), inferred) {
            (None, _) => {
                return Err((field, format!("{class:?} is not a supported architecture; supported: {supported}")))
            }
            (Some(t), Some(d)) if t != d => {
                let source = if declared.is_some() { "model_type" } else { "the other architectures" };
                return Err((field, format!("{class:?} is a {t} model, but {source} says {d:?}")));
            }
            (Some(t), _) => inferred = Some(t),
        }
    }
    inferred.ok_or_else(|| {
        ("model_type".into(), format!("missing (and no architectures to tell the model from); supported: {supported}"))
    })
}

impl ModelConfig {
    /// Reads and validates `config.json`. Errors name the file and the offending field.
    pub fn from_file(path: &Path) -> Result<Self, EncoderError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                EncoderError::MissingFile { path: path.to_path_buf(), what: "config.json (model architecture)" }
            } else {
                EncoderError::Io { path: path.to_path_buf(), source }
            }
        })?;
        let config = Self::from_json_str(&text).map_err(|(field, message)| EncoderError::Config {
            path: path.to_path_buf(),
            field,
            message,
        })?;
        Ok(config)
    }

    /// Parses and validates a config from JSON text; the error is `(field, message)`.
    pub fn from_json_str(text: &str) -> Result<Self, (String, String)> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ("(top level)".to_string(), format!("invalid JSON: {e}")))?;
        let model_type = detect_model_type(&value)?;
        let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "(top level)".to_string() } else { field };
            (field, e.into_inner().to_string())
        })?;
        let mpnet = model_type == "mpnet";
        let arch = if mpnet {
            Architecture::MPNet { relative_attention_num_buckets: raw.relative_attention_num_buckets.unwrap_or(32) }
        } else {
            let kind = raw.position_embedding_type.as_deref().unwrap_or("absolute");
            if kind != "absolute" {
                return Err((
                    "position_embedding_type".into(),
                    format!("only \"absolute\" is supported, got {kind:?}"),
                ));
            }
            Architecture::Bert { type_vocab_size: raw.type_vocab_size.unwrap_or(2) }
        };
        let config = ModelConfig {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            num_hidden_layers: raw.num_hidden_layers,
            num_attention_heads: raw.num_attention_heads,
            intermediate_size: raw.intermediate_size,
            hidden_act: raw.hidden_act.unwrap_or(HiddenAct::Gelu),
            max_position_embeddings: raw.max_position_embeddings,
            layer_norm_eps: raw.layer_norm_eps.unwrap_or(if mpnet { 1e-5 } else { 1e-12 }),
            hidden_dropout_prob: raw.hidden_dropout_prob.unwrap_or(0.1),
            attention_probs_dropout_prob: raw.attention_probs_dropout_prob.unwrap_or(0.1),
            pad_token_id: raw.pad_token_id.unwrap_or(if mpnet { 1 } else { 0 }),
            initializer_range: raw.initializer_range.unwrap_or(0.02),
        };
        config.validate()?;
        Ok(config)
    }

    /// `"bert"` or `"mpnet"`, as config.json's `model_type`.
    pub fn model_type(&self) -> &'static str {
        match self.arch {
            Architecture::Bert { .. } => "bert",
            Architecture::MPNet { .. } => "mpnet",
        }
    }

    /// Number of token types `token_type_ids` may use: BERT's `type_vocab_size`; MPNet has none, so only 0.
    pub fn token_types(&self) -> i64 {
        match self.arch {
            Architecture::Bert { type_vocab_size } => type_vocab_size,
            Architecture::MPNet { .. } => 1,
        }
    }

    /// The longest input in tokens that the position embeddings cover: `max_position_embeddings` for BERT
    /// (positions `0..s`); for MPNet, whose positions run `pad_token_id + 1 ..= pad_token_id + s`,
    /// `max_position_embeddings - pad_token_id - 1` (514 rows → 512 tokens).
    pub fn max_positions(&self) -> i64 {
        match self.arch {
            Architecture::Bert { .. } => self.max_position_embeddings,
            Architecture::MPNet { .. } => self.max_position_embeddings - self.pad_token_id - 1,
        }
    }

    /// Checks the invariants the model relies on; the error is `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let mut positive = vec![
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Architecture::Bert { type_vocab_size } = self.arch {
            positive.push(("type_vocab_size", type_vocab_size));
        }
        for (field, value) in positive {
            if value <= 0 {
                return Err((field.to_string(), format!("must be positive, got {value}")));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err((
                "num_attention_heads".to_string(),
                format!("must divide hidden_size ({}), got {}", self.hidden_size, self.num_attention_heads),
            ));
        }
        for (field, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            ("attention_probs_dropout_prob", self.attention_probs_dropout_prob),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err((field.to_string(), format!("must be in [0, 1), got {p}")));
            }
        }
        if !(self.layer_norm_eps > 0.0) {
            return Err(("layer_norm_eps".to_string(), format!("must be positive, got {}", self.layer_norm_eps)));
        }
        if self.pad_token_id < 0 || self.pad_token_id >= self.vocab_size {
            return Err((
                "pad_token_id".to_string(),
                format!("must be in [0, vocab_size={}), got {}", self.vocab_size, self.pad_token_id),
            ));
        }
        if let Architecture::MPNet { relative_attention_num_buckets } = self.arch {
            let needed = MPNET_NUM_BUCKETS;
            if relative_attention_num_buckets < needed {
                return Err((
                    "relative_attention_num_buckets".to_string(),
                    format!("must be at least {needed} (MPNet buckets relative positions into {needed}), got {relative_attention_num_buckets}"),
                ));
            }
            if self.max_positions() < 2 {
                return Err((
                    "max_position_embeddings".to_string(),
                    format!(
                        "must exceed pad_token_id + 2 = {} (MPNet positions start after the padding id), got {}",
                        self.pad_token_id + 2,
                        self.max_position_embeddings
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// A tiny BERT (2 layers, hidden 32, 2 heads, intermediate 64) for fast unit tests.
    pub fn tiny(vocab_size: i64) -> Self {
        ModelConfig {
            arch: Architecture::Bert { type_vocab_size: 2 },
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 64,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 64,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: 0,
            initializer_range: 0.02,
        }
    }

    /// A tiny MPNet (2 layers, hidden 32, 2 heads, intermediate 64, 32 relative buckets, pad id 1, 66 position
    /// rows = 64 tokens) for fast unit tests; pairs with [`super::toy_mpnet_tokenizer`].
    pub fn tiny_mpnet(vocab_size: i64) -> Self {
        ModelConfig {
            arch: Architecture::MPNet { relative_attention_num_buckets: 32 },
            max_position_embeddings: 66,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            ..Self::tiny(vocab_size)
        }
    }
}
