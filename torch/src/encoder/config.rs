//! `BertConfig`: the architecture hyper-parameters, read from the model's `config.json`
//! (the same file and field names as Hugging Face transformers' `BertConfig`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EncoderError;

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

/// Hyper-parameters of a BERT encoder. Unknown keys in config.json are ignored (HF configs carry many);
/// optional keys default as in transformers' `BertConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Number of rows of `embeddings.word_embeddings`.
    pub vocab_size: i64,
    /// Width of every hidden state (384 for MiniLM-L6).
    pub hidden_size: i64,
    /// Number of `encoder.layer.N` blocks.
    pub num_hidden_layers: i64,
    /// Number of attention heads; must divide `hidden_size`.
    pub num_attention_heads: i64,
    /// Width of the feed-forward block (`intermediate.dense`).
    pub intermediate_size: i64,
    /// Activation of the feed-forward block. Default `"gelu"` (exact, erf).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: HiddenAct,
    /// Number of rows of `embeddings.position_embeddings`; the longest input the model accepts.
    pub max_position_embeddings: i64,
    /// Number of rows of `embeddings.token_type_embeddings`. Default 2.
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: i64,
    /// Epsilon of every LayerNorm. Default 1e-12.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Dropout on embeddings and block outputs, used only when `train = true`. Default 0.1.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities, used only when `train = true`. Default 0.1.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Id of the padding token. Default 0.
    #[serde(default)]
    pub pad_token_id: i64,
    /// Standard deviation of the normal init of fresh (random) weights. Default 0.02.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Only `"absolute"` is supported. Default `"absolute"`.
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_hidden_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_type_vocab_size() -> i64 {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_position_embedding_type() -> String {
    "absolute".to_string()
}

impl BertConfig {
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
        let de = &mut serde_json::Deserializer::from_str(text);
        let config: BertConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." { "(top level)".to_string() } else { field };
            (field, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the invariants the model relies on; the error is `(field, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
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
        if self.position_embedding_type != "absolute" {
            return Err((
                "position_embedding_type".to_string(),
                format!("only \"absolute\" is supported, got {:?}", self.position_embedding_type),
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }

    /// A tiny BERT (2 layers, hidden 32, 2 heads, intermediate 64) for fast unit tests.
    pub fn tiny(vocab_size: i64) -> Self {
        BertConfig {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 64,
            hidden_act: HiddenAct::Gelu,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout_prob: 0.1,
            attention_probs_dropout_prob: 0.1,
            pad_token_id: 0,
            initializer_range: 0.02,
            position_embedding_type: default_position_embedding_type(),
        }
    }
}
