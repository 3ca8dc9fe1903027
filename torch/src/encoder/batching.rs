//! Tokenised texts, length-sorted batches and dynamic padding.

use tch::{Device, Kind, Tensor};

/// One tokenised text: ids with the special tokens (`[CLS] … [SEP]`), already truncated to
/// `max_seq_length`, and its token type ids. Not padded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl TokenizedText {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no tokens (never the case for BERT, which adds `[CLS]` and `[SEP]`).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The three `[b, s]` int64 model inputs of one padded batch.
#[derive(Debug)]
pub struct Batch {
    pub input_ids: Tensor,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Tensor,
    pub token_type_ids: Tensor,
}

/// Pads `items` on the right to the longest of them (dynamic padding, as the tokenizer's
/// `padding=True`/BatchLongest) and puts the three inputs on `device`. `items` must not be empty.
pub fn pad_batch(items: &[&TokenizedText], pad_id: i64, device: Device) -> Batch {
    let b = items.len();
    let s = items.iter().map(|t| t.len()).max().unwrap_or(0);
    let mut ids = vec![pad_id; b * s];
    let mut mask = vec![0i64; b * s];
    let mut types = vec![0i64; b * s];
    for (row, item) in items.iter().enumerate() {
        let start = row * s;
        ids[start..start + item.len()].copy_from_slice(&item.ids);
        mask[start..start + item.len()].fill(1);
        types[start..start + item.type_ids.len()].copy_from_slice(&item.type_ids);
    }
    let to_tensor = |v: &[i64]| Tensor::from_slice(v).view([b as i64, s as i64]).to_device(device);
    Batch { input_ids: to_tensor(&ids), attention_mask: to_tensor(&mask), token_type_ids: to_tensor(&types) }
}

/// Groups item indices into batches of at most `batch_size`, longest first, so that each batch holds
/// texts of similar length and little padding is computed (sentence-transformers sorts by length the
/// same way). Ties keep their input order, so the grouping is deterministic. Callers scatter results
/// back with the returned indices to restore the original order. `batch_size` must be at least 1.
pub fn length_sorted_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    order.chunks(batch_size).map(|c| c.to_vec()).collect()
}

/// Copies a float tensor of any shape to a flat `Vec<f32>` on the CPU.
pub(crate) fn to_vec_f32(xs: &Tensor) -> Result<Vec<f32>, tch::TchError> {
    let flat = xs.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1]);
    Vec::<f32>::try_from(&flat)
}
