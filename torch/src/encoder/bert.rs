//! The BERT encoder as a tree of small blocks, ported from Hugging Face transformers' `modeling_bert.py`.
//!
//! Each block is built by `new(vs, &config)`, where `vs` is the `VarStore` path of that block; the
//! variable names below mirror the checkpoint keys exactly (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...). A block only declares names and shapes with a
//! fresh-init rule; `VarStore::load(model.safetensors)` overwrites them with trained values.
//! The checkpoint's `pooler.*` tensors and the `embeddings.position_ids` buffer are not used:
//! sentence-transformers pools the last hidden state itself.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{BertConfig, HiddenAct};

/// Fresh weight init of transformers' `BertPreTrainedModel._init_weights`: normal(0, initializer_range).
fn weight_init(config: &BertConfig) -> nn::Init {
    nn::Init::Randn { mean: 0.0, stdev: config.initializer_range }
}

/// A `Linear` named `<vs>.weight` `[out, in]` and `<vs>.bias` `[out]` (torch.nn.Linear layout).
fn linear(vs: nn::Path, in_dim: i64, out_dim: i64, config: &BertConfig) -> nn::Linear {
    let c = nn::LinearConfig { ws_init: weight_init(config), bs_init: Some(nn::Init::Const(0.0)), bias: true };
    nn::linear(vs, in_dim, out_dim, c)
}

/// A `LayerNorm` named `<vs>.weight` / `<vs>.bias` (ones / zeros when fresh), eps from the config.
fn layer_norm(vs: nn::Path, dim: i64, config: &BertConfig) -> nn::LayerNorm {
    let c = nn::LayerNormConfig { eps: config.layer_norm_eps, ..Default::default() };
    nn::layer_norm(vs, vec![dim], c)
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

/// `embeddings`: word + token type + absolute position embeddings, then LayerNorm and dropout, as
/// transformers' `BertEmbeddings` (position ids `0..s` for every row; right padding).
#[derive(Debug)]
pub struct BertEmbeddings {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    token_type_embeddings: nn::Embedding,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertEmbeddings {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        let emb = |name: &str, rows: i64, padding_idx: i64| {
            // padding_idx only stops gradient flowing into the pad row, as torch.nn.Embedding(padding_idx=...).
            let c = nn::EmbeddingConfig { ws_init: weight_init(config), padding_idx, ..Default::default() };
            nn::embedding(&vs / name, rows, config.hidden_size, c)
        };
        BertEmbeddings {
            word_embeddings: emb("word_embeddings", config.vocab_size, config.pad_token_id),
            position_embeddings: emb("position_embeddings", config.max_position_embeddings, -1),
            token_type_embeddings: emb("token_type_embeddings", config.type_vocab_size, -1),
            layer_norm: layer_norm(&vs / "LayerNorm", config.hidden_size, config),
            dropout: config.hidden_dropout_prob,
        }
    }

    /// `input_ids`, `token_type_ids`: `[b, s]` int64 → `[b, s, hidden]`.
    pub fn forward_t(&self, input_ids: &Tensor, token_type_ids: &Tensor, train: bool) -> Tensor {
        let seq_len = input_ids.size()[1];
        let position_ids = Tensor::arange(seq_len, (Kind::Int64, input_ids.device())).unsqueeze(0);
        // Same summation order as transformers: (inputs_embeds + token_type_embeddings) + position_embeddings.
        let embeddings = self.word_embeddings.forward(input_ids)
            + self.token_type_embeddings.forward(token_type_ids)
            + self.position_embeddings.forward(&position_ids);
        self.layer_norm.forward(&embeddings).dropout(self.dropout, train)
    }
}

/// `attention.self`: multi-head scaled dot-product attention, as transformers' `BertSdpaSelfAttention`
/// (softmax(Q Kᵀ / √d + mask) V with dropout on the attention probabilities when training).
#[derive(Debug)]
pub struct BertSelfAttention {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    num_heads: i64,
    head_dim: i64,
    dropout: f64,
}

impl BertSelfAttention {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        let h = config.hidden_size;
        BertSelfAttention {
            query: linear(&vs / "query", h, h, config),
            key: linear(&vs / "key", h, h, config),
            value: linear(&vs / "value", h, h, config),
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

    /// `hidden`: `[b, s, h]`; `mask_bias`: `[b, 1, 1, s]` from [`attention_mask_bias`] → `[b, s, h]`.
    pub fn forward_t(&self, hidden: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        let (b, s, h) = hidden.size3().expect("hidden states are [batch, seq, hidden]");
        let q = self.split_heads(&self.query.forward(hidden));
        let k = self.split_heads(&self.key.forward(hidden));
        let v = self.split_heads(&self.value.forward(hidden));
        let dropout = if train { self.dropout } else { 0.0 };
        // scale None = 1/sqrt(head_dim), as BERT.
        let context = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask_bias), dropout, false, None, false);
        context.transpose(1, 2).contiguous().view([b, s, h])
    }
}

/// Dense, dropout, residual add, LayerNorm: transformers' `BertSelfOutput` (`attention.output`, from the
/// hidden size) and `BertOutput` (`output`, down from the intermediate size) are this block.
#[derive(Debug)]
pub struct BertResidualOutput {
    dense: nn::Linear,
    layer_norm: nn::LayerNorm,
    dropout: f64,
}

impl BertResidualOutput {
    pub fn new(vs: nn::Path, in_features: i64, config: &BertConfig) -> Self {
        BertResidualOutput {
            dense: linear(&vs / "dense", in_features, config.hidden_size, config),
            layer_norm: layer_norm(&vs / "LayerNorm", config.hidden_size, config),
            dropout: config.hidden_dropout_prob,
        }
    }

    pub fn forward_t(&self, hidden: &Tensor, input: &Tensor, train: bool) -> Tensor {
        let xs = self.dense.forward(hidden).dropout(self.dropout, train);
        self.layer_norm.forward(&(xs + input))
    }
}

/// `attention`: self-attention followed by its output block, as transformers' `BertAttention`.
#[derive(Debug)]
pub struct BertAttention {
    self_attention: BertSelfAttention,
    output: BertResidualOutput,
}

impl BertAttention {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        BertAttention {
            self_attention: BertSelfAttention::new(&vs / "self", config),
            output: BertResidualOutput::new(&vs / "output", config.hidden_size, config),
        }
    }

    pub fn forward_t(&self, hidden: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        let context = self.self_attention.forward_t(hidden, mask_bias, train);
        self.output.forward_t(&context, hidden, train)
    }
}

/// `intermediate`: dense up-projection and activation, as transformers' `BertIntermediate`
/// (`"gelu"` is the exact erf GELU, `torch.nn.functional.gelu(approximate="none")`).
#[derive(Debug)]
pub struct BertIntermediate {
    dense: nn::Linear,
    act: HiddenAct,
}

impl BertIntermediate {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        BertIntermediate {
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

/// `encoder.layer.N`: attention then feed-forward, as transformers' `BertLayer` (post-LayerNorm).
#[derive(Debug)]
pub struct BertLayer {
    attention: BertAttention,
    intermediate: BertIntermediate,
    output: BertResidualOutput,
}

impl BertLayer {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        BertLayer {
            attention: BertAttention::new(&vs / "attention", config),
            intermediate: BertIntermediate::new(&vs / "intermediate", config),
            output: BertResidualOutput::new(&vs / "output", config.intermediate_size, config),
        }
    }

    pub fn forward_t(&self, hidden: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        let attention_output = self.attention.forward_t(hidden, mask_bias, train);
        let intermediate = self.intermediate.forward(&attention_output);
        self.output.forward_t(&intermediate, &attention_output, train)
    }
}

/// `encoder`: the stack of `num_hidden_layers` layers, as transformers' `BertEncoder`.
#[derive(Debug)]
pub struct BertEncoder {
    layer: Vec<BertLayer>,
}

impl BertEncoder {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        let layers = &vs / "layer";
        let layer = (0..config.num_hidden_layers).map(|i| BertLayer::new(&layers / i, config)).collect();
        BertEncoder { layer }
    }

    pub fn forward_t(&self, hidden: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        let mut xs = hidden.shallow_clone();
        for layer in &self.layer {
            xs = layer.forward_t(&xs, mask_bias, train);
        }
        xs
    }
}

/// The whole model at the checkpoint's root (MiniLM's keys have no `bert.` prefix): transformers'
/// `BertModel` without the pooler; its output is `last_hidden_state`.
#[derive(Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: BertEncoder,
}

impl BertModel {
    pub fn new(vs: nn::Path, config: &BertConfig) -> Self {
        BertModel {
            embeddings: BertEmbeddings::new(&vs / "embeddings", config),
            encoder: BertEncoder::new(&vs / "encoder", config),
        }
    }

    /// `input_ids`, `attention_mask` (1 = token, 0 = padding), `token_type_ids`: `[b, s]` int64, on the
    /// model's device → `last_hidden_state` `[b, s, hidden]`. Dropout is active only when `train`.
    /// Callers must keep `s <= max_position_embeddings` and ids in range (see `Encoder::forward`).
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: &Tensor,
        train: bool,
    ) -> Tensor {
        let embeddings = self.embeddings.forward_t(input_ids, token_type_ids, train);
        let mask_bias = attention_mask_bias(attention_mask, embeddings.kind());
        self.encoder.forward_t(&embeddings, &mask_bias, train)
    }
}
