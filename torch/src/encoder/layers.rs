//! The blocks BERT and MPNet share: multi-head attention, the residual output block, the feed-forward block,
//! one transformer layer and the stack of them. transformers' `modeling_bert.py` and `modeling_mpnet.py`
//! compute the same thing in these blocks (post-LayerNorm layers, exact-erf GELU, additive attention bias);
//! they differ only in the names of the weights, which [`LayerNames`] gives per architecture
//! ([`super::bert::BERT_LAYER`], [`super::mpnet::MPNET_LAYER`]), and in what is added to the attention scores,
//! which the caller passes in.
//!
//! Each block is built by `new(vs, ...)` where `vs` is the `VarStore` path of the block; the variable names mirror
//! the checkpoint keys exactly. A block only declares names and shapes with a fresh-init rule;
//! `VarStore::load(model.safetensors)` overwrites them with trained values.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{HiddenAct, ModelConfig};

/// Fresh weight init of transformers' `_init_weights` (BERT and MPNet alike): normal(0, initializer_range).
pub(crate) fn weight_init(config: &ModelConfig) -> nn::Init {
    nn::Init::Randn { mean: 0.0, stdev: config.initializer_range }
}

/// `vs` followed by the dotted checkpoint path `parts` (`["attention", "self", "query"]`).
pub(crate) fn sub<'a>(vs: &nn::Path<'a>, parts: &[&str]) -> nn::Path<'a> {
    parts.iter().fold(vs.clone(), |p, part| p / *part)
}

/// A `Linear` named `<vs>.weight` `[out, in]` and `<vs>.bias` `[out]` (torch.nn.Linear layout).
pub(crate) fn linear(vs: nn::Path, in_dim: i64, out_dim: i64, config: &ModelConfig) -> nn::Linear {
    let c = nn::LinearConfig { ws_init: weight_init(config), bs_init: Some(nn::Init::Const(0.0)), bias: true };
    nn::linear(vs, in_dim, out_dim, c)
}

/// A `LayerNorm` named `<vs>.weight` / `<vs>.bias` (ones / zeros when fresh), eps from the config.
pub(crate) fn layer_norm(vs: nn::Path, dim: i64, config: &ModelConfig) -> nn::LayerNorm {
    let c = nn::LayerNormConfig { eps: config.layer_norm_eps, ..Default::default() };
    nn::layer_norm(vs, vec![dim], c)
}

/// An `Embedding` named `<vs>.weight` `[rows, hidden]`; `padding_idx` (-1: none) only stops gradient flowing
/// into that row, as torch.nn.Embedding(padding_idx=...).
pub(crate) fn embedding(vs: nn::Path, rows: i64, dim: i64, padding_idx: i64, config: &ModelConfig) -> nn::Embedding {
    let c = nn::EmbeddingConfig { ws_init: weight_init(config), padding_idx, ..Default::default() };
    nn::embedding(vs, rows, dim, c)
}

/// Additive attention bias `[b, 1, 1, s]` from a 0/1 mask `[b, s]`: 0 on real tokens and the most
/// negative finite value of `kind` on padded keys, as transformers' extended attention mask
/// (`(1 - mask) * torch.finfo(dtype).min`), so padded keys get zero attention weight.
pub fn attention_mask_bias(attention_mask: &Tensor, kind: Kind) -> Tensor {
    let min = match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.3895e38,
        Kind::Double => f64::MIN,
        _ => f32::MIN as f64,
    };
    let padded = attention_mask.eq(0).unsqueeze(1).unsqueeze(1);
    Tensor::zeros(padded.size(), (kind, attention_mask.device())).masked_fill(&padded, min)
}

/// Where one layer's weights live, relative to `encoder.layer.N`, as dotted checkpoint paths split in parts.
#[derive(Debug, Clone, Copy)]
pub struct LayerNames {
    pub query: &'static [&'static str],
    pub key: &'static [&'static str],
    pub value: &'static [&'static str],
    /// The projection of the attention context back to the hidden size (BERT `attention.output.dense`,
    /// MPNet `attention.attn.o`).
    pub attention_dense: &'static [&'static str],
    /// The LayerNorm after the attention's residual add.
    pub attention_layer_norm: &'static [&'static str],
}

/// Multi-head scaled dot-product attention: softmax(Q Kᵀ / √d + bias) V, with dropout on the attention
/// probabilities when training. transformers' `BertSdpaSelfAttention` (bias = padding mask) and
/// `MPNetSelfAttention` without its output projection (bias = relative position bias + padding mask; it adds
/// them in that order to the scaled scores, as here).
#[derive(Debug)]
pub struct MultiHeadAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    num_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl MultiHeadAttention {
    pub fn new(layer: &nn::Path, names: &LayerNames, config: &ModelConfig) -> Self {
        let h = config.hidden_size;
        MultiHeadAttention {
            query: linear(sub(layer, names.query), h, h, config),
            key: linear(sub(layer, names.key), h, h, config),
            value: linear(sub(layer, names.value), h, h, config),
            num_heads: config.num_attention_heads,
            head_dim: config.head_dim(),
            dropout: config.attention_probs_dropout_prob,
        }
    }

    /// `[b, s, h]` → `[b, heads, s, head_dim]`.
    fn split_heads(&self, xs: &Tensor) -> Tensor {
        let (b, s, _) = xs.size3().expect("hidden states are [batch, seq, hidden]");
        xs.view([b, s, self.num_heads, self.head_dim]).transpose(1, 2)
    }

    /// `hidden`: `[b, s, h]`; `bias`: additive, broadcastable to `[b, heads, s, s]` (e.g. `[b, 1, 1, s]` from
    /// [`attention_mask_bias`]) → the context `[b, s, h]` (heads concatenated, not yet projected).
    pub fn forward_t(&self, hidden: &Tensor, bias: &Tensor, train: bool) -> Tensor {
        let (b, s, h) = hidden.size3().expect("hidden states are [batch, seq, hidden]");
        let q = self.split_heads(&self.query.forward(hidden));
        let k = self.split_heads(&self.key.forward(hidden));
        let v = self.split_heads(&self.value.forward(hidden));
        let dropout = if train { self.dropout } else { 0.0 };
        // scale None = 1/sqrt(head_dim), as both models.
        let context = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(bias), dropout, false, None, false);
        context.transpose(1, 2).contiguous().view([b, s, h])
    }
}

/// Dense, dropout, residual add, LayerNorm: transformers' `BertSelfOutput` / `BertOutput`, MPNet's
/// `MPNetAttention` (its `attn.o`, dropout and `LayerNorm`) / `MPNetOutput`.
#[derive(Debug)]
pub struct ResidualOutput {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl ResidualOutput {
    pub fn new(dense: nn::Path, norm: nn::Path, in_features: i64, config: &ModelConfig) -> Self {
        ResidualOutput {
            dense: linear(dense, in_features, config.hidden_size, config),
            layer_norm: layer_norm(norm, config.hidden_size, config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward_t(&self, hidden: &Tensor, input: &Tensor, train: bool) -> Tensor {
        let xs = self.dense.forward(hidden).dropout(self.dropout, train);
        self.layer_norm.forward(&(xs + input))
    }
}

/// `intermediate`: dense up-projection and activation, as transformers' `BertIntermediate` /
/// `MPNetIntermediate` (`"gelu"` is the exact erf GELU, `torch.nn.functional.gelu(approximate="none")`).
#[derive(Debug)]
pub struct Intermediate {
    dense: nn::Linear,
    act: HiddenAct,
}

impl Intermediate {
    pub fn new(vs: nn::Path, config: &ModelConfig) -> Self {
        Intermediate {
            dense: linear(&vs / "dense", config.hidden_size, config.intermediate_size, config),
            act: config.hidden_act,
        }
    }

    pub fn forward(&self, hidden: &Tensor) -> Tensor {
        let xs = self.dense.forward(hidden);
        match self.act {
            HiddenAct::Gelu => xs.gelu("none"),
            HiddenAct::GeluTanh => xs.gelu("tanh"),
            HiddenAct::Relu => xs.relu(),
        }
    }
}

/// `encoder.layer.N`: attention, its residual output, then the feed-forward block, as transformers'
/// `BertLayer` / `MPNetLayer` (post-LayerNorm).
#[derive(Debug)]
pub struct TransformerLayer {
    attention: MultiHeadAttention,
    attention_output: ResidualOutput,
    intermediate: Intermediate,
    output: ResidualOutput,
}

impl TransformerLayer {
    pub fn new(vs: nn::Path, names: &LayerNames, config: &ModelConfig) -> Self {
        TransformerLayer {
            attention: MultiHeadAttention::new(&vs, names, config),
            attention_output: ResidualOutput::new(
                sub(&vs, names.attention_dense),
                sub(&vs, names.attention_layer_norm),
                config.hidden_size,
                config,
            ),
            intermediate: Intermediate::new(&vs / "intermediate", config),
            output: ResidualOutput::new(
                &vs / "output" / "dense",
                &vs / "output" / "LayerNorm",
                config.intermediate_size,
                config,
            ),
        }
    }

    /// `hidden` `[b, s, h]`, `bias` as [`MultiHeadAttention::forward_t`] → `[b, s, h]`.
    pub fn forward_t(&self, hidden: &Tensor, bias: &Tensor, train: bool) -> Tensor {
        let context = self.attention.forward_t(hidden, bias, train);
        let attention_output = self.attention_output.forward_t(&context, hidden, train);
        let intermediate = self.intermediate.forward(&attention_output);
        self.output.forward_t(&intermediate, &attention_output, train)
    }
}

/// `encoder.layer`: `num_hidden_layers` layers, one attention bias for all of them.
#[derive(Debug)]
pub struct LayerStack {
    layer: Vec<TransformerLayer>,
}

impl LayerStack {
    /// `vs` is the `encoder` path; layers are `encoder.layer.0`, `encoder.layer.1`, ...
    pub fn new(vs: &nn::Path, names: &LayerNames, config: &ModelConfig) -> Self {
        let layers = vs / "layer";
        let layer = (0..config.num_hidden_layers).map(|i| TransformerLayer::new(&layers / i, names, config)).collect();
        LayerStack { layer }
    }

    pub fn forward_t(&self, hidden: &Tensor, bias: &Tensor, train: bool) -> Tensor {
        let mut xs = hidden.shallow_clone();
        for layer in &self.layer {
            xs = layer.forward_t(&xs, bias, train);
        }
        xs
    }
}
