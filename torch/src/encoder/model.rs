//! The graph that `config.json` asks for: the one place that dispatches on the architecture.

use tch::nn;
use tch::Tensor;

use super::bert::BertModel;
use super::config::{Architecture, ModelConfig};
use super::mpnet::MPNetModel;

/// A BERT or an MPNet, built from [`ModelConfig::arch`]; both give `last_hidden_state`.
#[derive(Debug)]
pub enum TransformerModel {
    Bert(BertModel),
    MPNet(MPNetModel),
}

impl TransformerModel {
    /// Declares the model's variables under `vs` (the checkpoint's root).
    pub fn new(vs: nn::Path, config: &ModelConfig) -> Self {
        match config.arch {
            Architecture::Bert { type_vocab_size } => {
                TransformerModel::Bert(BertModel::new(vs, config, type_vocab_size))
            }
            Architecture::MPNet { relative_attention_num_buckets } => {
                TransformerModel::MPNet(MPNetModel::new(vs, config, relative_attention_num_buckets))
            }
        }
    }

    /// `input_ids`, `attention_mask` (1 = token, 0 = padding), `token_type_ids`: `[b, s]` int64 on the model's
    /// device → `last_hidden_state` `[b, s, hidden]`. MPNet has no token types: it does not read
    /// `token_type_ids` (`Encoder::forward` checks they are all 0). Dropout is active only when `train`.
    /// Callers must keep `s <= config.max_positions()` and ids in range (see `Encoder::forward`).
    pub fn forward_t(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: &Tensor,
        train: bool,
    ) -> Tensor {
        match self {
            TransformerModel::Bert(m) => m.forward_t(input_ids, attention_mask, token_type_ids, train),
            TransformerModel::MPNet(m) => m.forward_t(input_ids, attention_mask, train),
        }
    }
}
