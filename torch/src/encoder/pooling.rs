//! Sentence pooling on top of the last hidden state; reused by training.

use tch::{Kind, Tensor};

/// Mean of the token vectors over the attention mask: `hidden` `[b, s, h]`, `attention_mask` `[b, s]`
/// (1 = token, 0 = padding) → `[b, h]`. Matches sentence-transformers' `Pooling` with
/// `pooling_mode_mean_tokens`: `sum(hidden * mask) / clamp(sum(mask), min = 1e-9)`, so padding never
/// contributes and an all-padding row gives zeros instead of NaN.
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Tensor {
    let mask = attention_mask.unsqueeze(-1).to_kind(hidden.kind());
    let summed = (hidden * &mask).sum_dim_intlist(1, false, None::<Kind>);
    let counts = mask.sum_dim_intlist(1, false, None::<Kind>).clamp_min(1e-9);
    summed / counts
}

/// Scales each row (last dim) to unit Euclidean length. Matches sentence-transformers' `Normalize`
/// module (`torch.nn.functional.normalize(p=2, dim=1)`: `x / max(‖x‖₂, 1e-12)`).
pub fn l2_normalize(xs: &Tensor) -> Tensor {
    let norms = xs.norm_scalaropt_dim(2, -1, true).clamp_min(1e-12);
    xs / norms
}
