//! MPNet (`model_type = "mpnet"`, all-mpnet-base-v2), ported from Hugging Face transformers'
//! `modeling_mpnet.py`: what MPNet has of its own over the shared blocks of [`super::layers`]:
//! - position ids that count real tokens from `padding_idx + 1` (`create_position_ids_from_input_ids`), so
//!   padding keeps position `padding_idx`;
//! - no token type embeddings;
//! - a relative position bias: relative distances bucketed into 32 buckets (exact up to 8 each way, then
//!   logarithmic up to 128, bidirectional), looked up in one `encoder.relative_attention_bias` embedding
//!   `[buckets, heads]` shared by all layers and added to every layer's attention scores;
//! - its own weight names (`encoder.layer.N.attention.attn.{q,k,v,o}`, `encoder.layer.N.attention.LayerNorm`).
//!
//! sentence-transformers saves the bare `MPNetModel`, so the keys have no `mpnet.` prefix. The checkpoint's
//! `pooler.*` tensors and the `embeddings.position_ids` buffer are not used.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::config::ModelConfig;
use super::layers::{attention_mask_bias, embedding, layer_norm, LayerNames, LayerStack};

/// MPNet's names of the layer weights, under `encoder.layer.N`.
pub const MPNET_LAYER: LayerNames = LayerNames {
    query: &["attention", "attn", "q"],
    key: &["attention", "attn", "k"],
    value: &["attention", "attn", "v"],
    attention_dense: &["attention", "attn", "o"],
    attention_layer_norm: &["attention", "LayerNorm"],
};

/// Buckets of the relative position bias (32, whatever `relative_attention_num_buckets` says); defined with the
/// config, which requires at least that many rows.
pub use super::config::MPNET_NUM_BUCKETS as NUM_BUCKETS;
/// Distances from this on share the last bucket of their direction (`relative_position_bucket`'s default).
pub const MAX_DISTANCE: i64 = 128;

/// transformers' `MPNetEncoder.relative_position_bucket`, op for op (so the float32 logarithm rounds the same
/// way at the bucket edges): int64 relative positions (`key - query`) → bucket ids in `[0, num_buckets)`.
/// Half the buckets are for keys before the query; in each half the first `num_buckets / 4` distances have
/// a bucket each, longer ones share logarithmically wider buckets up to `max_distance`.
pub fn relative_position_bucket(relative_position: &Tensor, num_buckets: i64, max_distance: i64) -> Tensor {
    let n = -relative_position;
    let half = num_buckets / 2;
    let ret = n.lt(0).to_kind(Kind::Int64) * half;
    let n = n.abs();
    let max_exact = half / 2;
    let is_small = n.lt(max_exact);
    // clamp_min(1) only keeps log(0) out of the branch that is_small discards anyway.
    let val_if_large = (n.clamp_min(1).to_kind(Kind::Float) / max_exact as f64).log()
        / (max_distance as f64 / max_exact as f64).ln()
        * (half - max_exact) as f64;
    let val_if_large = (val_if_large.to_kind(Kind::Int64) + max_exact).clamp_max(half - 1);
    ret + n.where_self(&is_small, &val_if_large)
}

/// `embeddings`: word + position embeddings, then LayerNorm and dropout, as transformers' `MPNetEmbeddings`.
#[derive(Debug)]
pub struct MPNetEmbeddings {
    word_embeddings: nn::Embedding,
    position_embeddings: nn::Embedding,
    layer_norm: nn::LayerNorm,
    padding_idx: i64,
    dropout: f64,
}

impl MPNetEmbeddings {
    pub fn new(vs: nn::Path, config: &ModelConfig) -> Self {
        let (h, pad) = (config.hidden_size, config.pad_token_id);
        MPNetEmbeddings {
            word_embeddings: embedding(&vs / "word_embeddings", config.vocab_size, h, pad, config),
            position_embeddings: embedding(&vs / "position_embeddings", config.max_position_embeddings, h, pad, config),
            layer_norm: layer_norm(&vs / "LayerNorm", h, config),
            padding_idx: pad,
            dropout: config.hidden_dropout_prob,
        }
    }

    /// Position ids as transformers' `create_position_ids_from_input_ids`: `cumsum(mask) * mask + padding_idx`
    /// with `mask = input_ids != padding_idx`, so the first real token is at `padding_idx + 1`.
    pub fn position_ids(&self, input_ids: &Tensor) -> Tensor {
        let mask = input_ids.ne(self.padding_idx).to_kind(Kind::Int64);
        mask.cumsum(1, Kind::Int64) * &mask + self.padding_idx
    }

    /// `input_ids` `[b, s]` int64 → `[b, s, hidden]`.
    pub fn forward_t(&self, input_ids: &Tensor, train: bool) -> Tensor {
        let position_ids = self.position_ids(input_ids);
        let embeddings = self.word_embeddings.forward(input_ids) + self.position_embeddings.forward(&position_ids);
        self.layer_norm.forward(&embeddings).dropout(self.dropout, train)
    }
}

/// `encoder`: the layers and the relative position bias they share, as transformers' `MPNetEncoder`.
#[derive(Debug)]
pub struct MPNetEncoder {
    layers: LayerStack,
    relative_attention_bias: nn::Embedding,
}

impl MPNetEncoder {
    pub fn new(vs: nn::Path, config: &ModelConfig, num_buckets: i64) -> Self {
        MPNetEncoder {
            layers: LayerStack::new(&vs, &MPNET_LAYER, config),
            relative_attention_bias: embedding(
                &vs / "relative_attention_bias",
                num_buckets,
                config.num_attention_heads,
                -1,
                config,
            ),
        }
    }

    /// The bias of `compute_position_bias` for `seq_len` tokens: `[1, heads, s, s]`, entry `[h, i, j]` the
    /// learnt value of head `h` for key `j` relative to query `i`.
    pub fn position_bias(&self, seq_len: i64, device: Device) -> Tensor {
        let positions = Tensor::arange(seq_len, (Kind::Int64, device));
        let relative = positions.unsqueeze(0) - positions.unsqueeze(1);
        let buckets = relative_position_bucket(&relative, NUM_BUCKETS, MAX_DISTANCE);
        self.relative_attention_bias.forward(&buckets).permute([2, 0, 1]).unsqueeze(0)
    }

    /// `hidden` `[b, s, h]`, `mask_bias` `[b, 1, 1, s]` → `[b, s, h]`. As transformers, the scores get the
    /// position bias, then the padding mask.
    pub fn forward_t(&self, hidden: &Tensor, mask_bias: &Tensor, train: bool) -> Tensor {
        let seq_len = hidden.size()[1];
        let bias = self.position_bias(seq_len, hidden.device()).to_kind(mask_bias.kind()) + mask_bias;
        self.layers.forward_t(hidden, &bias, train)
    }
}

/// The whole model at the checkpoint's root: transformers' `MPNetModel` without the pooler; its output is
/// `last_hidden_state`.
#[derive(Debug)]
pub struct MPNetModel {
    embeddings: MPNetEmbeddings,
    encoder: MPNetEncoder,
}

impl MPNetModel {
    pub fn new(vs: nn::Path, config: &ModelConfig, num_buckets: i64) -> Self {
        MPNetModel {
            embeddings: MPNetEmbeddings::new(&vs / "embeddings", config),
            encoder: MPNetEncoder::new(&vs / "encoder", config, num_buckets),
        }
    }

    /// `input_ids`, `attention_mask` (1 = token, 0 = padding): `[b, s]` int64 on the model's device →
    /// `last_hidden_state` `[b, s, hidden]`. Padding must use `pad_token_id` (as [`super::pad_batch`] does),
    /// which is what keeps the positions of real tokens independent of padding. Dropout only when `train`.
    pub fn forward_t(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        let embeddings = self.embeddings.forward_t(input_ids, train);
        let mask_bias = attention_mask_bias(attention_mask, embeddings.kind());
        self.encoder.forward_t(&embeddings, &mask_bias, train)
    }
}
