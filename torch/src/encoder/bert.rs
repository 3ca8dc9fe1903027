//! BERT (`model_type = "bert"`, all-MiniLM-L6-v2), ported from Hugging Face transformers' `modeling_bert.py`:
//! what BERT has of its own (absolute positions, token type embeddings, its weight names) over the shared
//! blocks of [`super::layers`].
//!
//! Weight names mirror the checkpoint keys (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, ...; no `bert.` prefix). The checkpoint's `pooler.*`
//! tensors and the `embeddings.position_ids` buffer are not used: sentence-transformers pools the last hidden
//! state itself.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::ModelConfig;
use super::layers::{attention_mask_bias, embedding, layer_norm, LayerNames, LayerStack};

/// BERT's names of the layer weights, under `encoder.layer.N`.
pub const BERT_LAYER: LayerNames = LayerNames {
    query: &["attention", "self", "query"],
    key: &["attention", "self", "key"],
    value: &["attention", "self", "value"],
    attention_dense: &["attention", "output", "dense"],
    attention_layer_norm: &["attention", "output", "LayerNorm"],
};

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
    pub fn new(vs: nn::Path, config: &ModelConfig, type_vocab_size: i64) -> Self {
        let h = config.hidden_size;
        BertEmbeddings {
            word_embeddings: embedding(&vs / "word_embeddings", config.vocab_size, h, config.pad_token_id, config),
            position_embeddings: embedding(&vs / "position_embeddings", config.max_position_embeddings, h, -1, config),
            token_type_embeddings: embedding(&vs / "token_type_embeddings", type_vocab_size, h, -1, config),
            layer_norm: layer_norm(&vs / "LayerNorm", h, config),
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

/// The whole model at the checkpoint's root (MiniLM's keys have no `bert.` prefix): transformers'
/// `BertModel` without the pooler; its output is `last_hidden_state`.
#[derive(Debug)]
pub struct BertModel {
    embeddings: BertEmbeddings,
    encoder: LayerStack,
}

impl BertModel {
    pub fn new(vs: nn::Path, config: &ModelConfig, type_vocab_size: i64) -> Self {
        BertModel {
            embeddings: BertEmbeddings::new(&vs / "embeddings", config, type_vocab_size),
            encoder: LayerStack::new(&(&vs / "encoder"), &BERT_LAYER, config),
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
