//! The ColTrast model: the BERT encoder plus two heads.
//!
//! - **Pooled head** (sentence-transformers' `Pooling(mean) → Dense → Normalize`): mean of the last hidden
//!   state over the attention mask, a linear map `[D, H]` with bias, then L2 normalisation. It starts as the
//!   identity when `D = H` (and as `[I; 0]` when `D > H`), so at step 0 the model embeds exactly as the base
//!   model; when `D < H` it starts as the projection on the top-`D` principal directions of the base model's
//!   pooled vectors of the training texts (the closest a narrower head can get).
//! - **Token head** (ColBERT's linear layer): each token's hidden state mapped by `[T, H]` with bias, then L2
//!   normalised per token. Its weights start as N(0, 1/H) draws from the training seed (a random projection,
//!   which keeps cosines roughly intact), its bias at 0.
//! - **MaxSim logit**: `scale × score + shift`, two scalars ([`ColTrastModel::maxsim_scale`]) held fixed at
//!   [`MAXSIM_SCALE`] and [`MAXSIM_SHIFT`] (see the stage docs for why).
//!
//! Dropout is BERT's own (`hidden_dropout_prob`, `attention_probs_dropout_prob`), active only with
//! `train = true`.

use tch::{Device, Kind, Tensor};

use super::rng::{SplitMix64, STREAM_TOKEN_HEAD};
use crate::encoder::{l2_normalize, length_sorted_batches, mean_pool, pad_batch, Batch, Encoder, TokenizedText};
use coltrast::error::{Error, Result};

/// Fixed scale of the MaxSim logit: `logit = MAXSIM_SCALE × score + MAXSIM_SHIFT`.
pub const MAXSIM_SCALE: f64 = 10.0;
/// Fixed shift of the MaxSim logit.
pub const MAXSIM_SHIFT: f64 = -5.0;

/// Outputs of one forward pass over a padded batch.
pub struct Encoded {
    /// `[b, D]` unit vectors.
    pub pooled: Tensor,
    /// `[b, s, T]` unit vectors (padding positions hold garbage; use `mask`).
    pub tokens: Tensor,
    /// `[b, s]` int64, 1 on real tokens.
    pub mask: Tensor,
}

/// The encoder and the two heads. Parameters are plain tensors (leaves with `requires_grad`), named for
/// checkpoints as `encoder.<HF key>`, `dense.linear.{weight,bias}`, `token_head.{weight,bias}`.
#[derive(Debug)]
pub struct ColTrastModel {
    encoder: Encoder,
    dense_w: Tensor,
    dense_b: Tensor,
    token_w: Tensor,
    token_b: Tensor,
    maxsim_scale: f64,
    maxsim_shift: f64,
}

fn param(values: &[f32], shape: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(values).view(shape).to_device(device).set_requires_grad(true)
}

impl ColTrastModel {
    /// Wraps a (base) encoder with freshly initialised heads. `pca_texts` are used only when
    /// `embedding_dim < hidden` (see the module docs).
    pub fn new(
        encoder: Encoder,
        embedding_dim: usize,
        token_dim: usize,
        seed: u64,
        pca_texts: &[TokenizedText],
    ) -> Result<Self> {
        let h = encoder.dim();
        let device = encoder.device();
        if embedding_dim == 0 || token_dim == 0 {
            return Err(Error::internal("head widths must be positive"));
        }
        let dense_w = if embedding_dim >= h {
            let mut w = vec![0f32; embedding_dim * h];
            for i in 0..h {
                w[i * h + i] = 1.0;
            }
            param(&w, &[embedding_dim as i64, h as i64], device)
        } else {
            if pca_texts.is_empty() {
                return Err(Error::internal("embedding_dim < hidden size needs texts for the principal directions"));
            }
            tracing::warn!(
                embedding_dim,
                hidden = h,
                "embedding_dim is below the hidden size: the pooled head starts from the top principal directions, \
                 so step 0 only approximates the base model"
            );
            let x = pooled_unnormalized(&encoder, pca_texts, 64)?;
            let gram = x.tr().matmul(&x) / x.size()[0] as f64;
            let (_, vecs) = gram.to_kind(Kind::Double).linalg_eigh("L");
            // Eigenvalues ascend: the last `embedding_dim` columns, largest first, as rows.
            let top = vecs.narrow(1, h as i64 - embedding_dim as i64, embedding_dim as i64).flip([1]).tr();
            top.to_kind(Kind::Float).contiguous().to_device(device).set_requires_grad(true)
        };
        let dense_b = param(&vec![0f32; embedding_dim], &[embedding_dim as i64], device);
        let mut g = SplitMix64::derive(seed, STREAM_TOKEN_HEAD);
        let std = 1.0 / (h as f64).sqrt();
        let tw: Vec<f32> = (0..token_dim * h).map(|_| (g.normal() * std) as f32).collect();
        let token_w = param(&tw, &[token_dim as i64, h as i64], device);
        let token_b = param(&vec![0f32; token_dim], &[token_dim as i64], device);
        Ok(ColTrastModel {
            encoder,
            dense_w,
            dense_b,
            token_w,
            token_b,
            maxsim_scale: MAXSIM_SCALE,
            maxsim_shift: MAXSIM_SHIFT,
        })
    }

    /// Assembles a model from trained parts (see [`super::export::load_model_dir`]).
    pub fn from_parts(
        encoder: Encoder,
        dense: (Tensor, Tensor),
        token_head: (Tensor, Tensor),
        maxsim_scale: f64,
        maxsim_shift: f64,
    ) -> Result<Self> {
        let h = encoder.dim() as i64;
        let device = encoder.device();
        let (dw, db, tw, tb) = (dense.0, dense.1, token_head.0, token_head.1);
        let ok = dw.size().len() == 2
            && dw.size()[1] == h
            && db.size() == [dw.size()[0]]
            && tw.size().len() == 2
            && tw.size()[1] == h
            && tb.size() == [tw.size()[0]];
        if !ok {
            return Err(Error::Usage(format!(
                "head shapes do not fit hidden size {h}: dense {:?}/{:?}, token head {:?}/{:?}",
                dw.size(),
                db.size(),
                tw.size(),
                tb.size()
            )));
        }
        let p = |t: Tensor| t.to_kind(Kind::Float).to_device(device).detach().set_requires_grad(true);
        Ok(ColTrastModel {
            encoder,
            dense_w: p(dw),
            dense_b: p(db),
            token_w: p(tw),
            token_b: p(tb),
            maxsim_scale,
            maxsim_shift,
        })
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }
    pub fn device(&self) -> Device {
        self.encoder.device()
    }
    /// Width of the pooled embedding.
    pub fn embedding_dim(&self) -> usize {
        self.dense_w.size()[0] as usize
    }
    /// Width of the token embeddings.
    pub fn token_dim(&self) -> usize {
        self.token_w.size()[0] as usize
    }
    /// `(scale, shift)` of the MaxSim logit.
    pub fn maxsim_affine(&self) -> (f64, f64) {
        (self.maxsim_scale, self.maxsim_shift)
    }
    /// The Dense head: weight `[D, H]`, bias `[D]`.
    pub fn dense(&self) -> (&Tensor, &Tensor) {
        (&self.dense_w, &self.dense_b)
    }
    /// The token head: weight `[T, H]`, bias `[T]`.
    pub fn token_head(&self) -> (&Tensor, &Tensor) {
        (&self.token_w, &self.token_b)
    }

    /// Every trainable tensor with its checkpoint name, in a fixed order (encoder keys sorted, then heads).
    /// The tensors share storage with the model: in-place updates train it.
    pub fn named_parameters(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> =
            self.encoder.var_store().variables().into_iter().map(|(k, v)| (format!("encoder.{k}"), v)).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars.push(("dense.linear.weight".into(), self.dense_w.shallow_clone()));
        vars.push(("dense.linear.bias".into(), self.dense_b.shallow_clone()));
        vars.push(("token_head.weight".into(), self.token_w.shallow_clone()));
        vars.push(("token_head.bias".into(), self.token_b.shallow_clone()));
        vars
    }

    /// Overwrites every parameter with the tensor of the same name in `named` (all must be present).
    pub fn load_parameters(&self, named: &[(String, Tensor)], origin: &str) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (name, mut p) in self.named_parameters() {
            let src = named
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| t)
                .ok_or_else(|| Error::internal(format!("{origin}: tensor {name} missing")))?;
            if src.size() != p.size() {
                return Err(Error::internal(format!(
                    "{origin}: tensor {name} has shape {:?}, the model {:?}",
                    src.size(),
                    p.size()
                )));
            }
            p.f_copy_(&src.to_device(p.device()).to_kind(p.kind())).map_err(Error::internal)?;
        }
        Ok(())
    }

    /// Copies of all parameters (detached), e.g. to keep the best epoch's weights.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        let _guard = tch::no_grad_guard();
        self.named_parameters().into_iter().map(|(n, t)| (n, t.detach().copy())).collect()
    }

    /// One forward pass: pooled and token embeddings of a padded batch. Dropout only when `train`.
    /// Batches come from the encoder's own tokenizer, so ids and shapes are trusted (no range checks).
    pub fn encode(&self, batch: &Batch, train: bool) -> Encoded {
        let hidden = self.hidden(batch, train);
        let pooled = self.pool_head(&hidden, &batch.attention_mask);
        let tokens = l2_normalize(&hidden.linear(&self.token_w, Some(&self.token_b)));
        Encoded { pooled, tokens, mask: batch.attention_mask.shallow_clone() }
    }

    /// Pooled embeddings only (`[b, D]`, unit length).
    pub fn encode_pooled(&self, batch: &Batch, train: bool) -> Tensor {
        let hidden = self.hidden(batch, train);
        self.pool_head(&hidden, &batch.attention_mask)
    }

    fn hidden(&self, batch: &Batch, train: bool) -> Tensor {
        self.encoder.model().forward_t(&batch.input_ids, &batch.attention_mask, &batch.token_type_ids, train)
    }

    fn pool_head(&self, hidden: &Tensor, mask: &Tensor) -> Tensor {
        l2_normalize(&mean_pool(hidden, mask).linear(&self.dense_w, Some(&self.dense_b)))
    }

    /// Pooled embeddings of texts in evaluation mode, rows in input order, as a `[n, D]` CPU tensor.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Tensor> {
        let tokens = self.encoder.tokenize(texts).map_err(Error::from)?;
        let _guard = tch::no_grad_guard();
        let pad = self.encoder.config().pad_token_id;
        let mut rows: Vec<Option<Tensor>> = (0..texts.len()).map(|_| None).collect();
        for idx in length_sorted_batches(&tokens.iter().map(|t| t.len()).collect::<Vec<_>>(), batch_size) {
            let items: Vec<&TokenizedText> = idx.iter().map(|&i| &tokens[i]).collect();
            let b = pad_batch(&items, pad, self.device());
            let e = self.encode_pooled(&b, false).to_device(Device::Cpu);
            for (r, &i) in idx.iter().enumerate() {
                rows[i] = Some(e.get(r as i64));
            }
        }
        let rows: Vec<Tensor> = rows.into_iter().flatten().collect();
        if rows.is_empty() {
            return Ok(Tensor::zeros([0, self.embedding_dim() as i64], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::stack(&rows, 0))
    }
}

/// Mean-pooled (not normalised) base vectors of tokenised texts, `[n, H]`, under `no_grad`.
fn pooled_unnormalized(encoder: &Encoder, texts: &[TokenizedText], batch_size: usize) -> Result<Tensor> {
    let _guard = tch::no_grad_guard();
    let pad = encoder.config().pad_token_id;
    let mut parts = Vec::new();
    for idx in length_sorted_batches(&texts.iter().map(|t| t.len()).collect::<Vec<_>>(), batch_size) {
        let items: Vec<&TokenizedText> = idx.iter().map(|&i| &texts[i]).collect();
        let b = pad_batch(&items, pad, encoder.device());
        let h = encoder.model().forward_t(&b.input_ids, &b.attention_mask, &b.token_type_ids, false);
        parts.push(mean_pool(&h, &b.attention_mask));
    }
    Ok(Tensor::cat(&parts, 0))
}
