//! # train: ColTrast fine-tuning
//!
//! **What.** Fine-tunes the base encoder on the mined pairs with the ColTrast objective
//! `L = w_c · L_contrastive + w_li · L_late` and writes a sentence-transformers model dir.
//!
//! - **Model** (`coltrast_torch::train::model`). The BERT encoder with BERT's dropout while training (off in
//!   evaluation) and two heads. Pooled head: mean pooling → Dense `[D, H]` → L2 normalisation, starting as the
//!   identity so that step 0 embeds exactly as the base model. Token head: Dense `[T, H]` on every token's
//!   hidden state → per-token L2 normalisation (ColBERT), starting as a seeded random projection.
//! - **L_contrastive** (`coltrast_torch::train::loss`). InfoNCE over cosines of pooled embeddings divided by
//!   `train.temperature`. A query's candidates are its positive, its hard negatives and the other queries'
//!   positives in the batch; in-batch positives with the same text, the same Q&A id or the same query text
//!   are masked. The label is the column of the query's own positive.
//! - **L_late.** MaxSim: per real query token the maximum cosine over the document's real tokens, averaged
//!   over the query tokens (so the score is in [-1, 1]); padding is masked on both sides, while `[CLS]`,
//!   `[SEP]` and punctuation count like any token (the score needs only the attention mask, so any consumer
//!   reproduces it without a tokenizer-specific skip list). The logit is `10 · score − 5`, a **fixed** scale
//!   and shift (score 0.5 ↔ probability 0.5; stored in `coltrast.json`): with this data size and learning
//!   rate a learned scale/shift would barely move from its initial value, so a fixed one says honestly what
//!   is used. Binary cross-entropy with label 1 for the positive and 0 for each hard negative.
//! - **Loop** (`coltrast_torch::train::train`). AdamW (β 0.9/0.999, ε 1e-8; weight decay on weight matrices, not on
//!   biases or LayerNorms), linear warm-up over `ceil(warmup_ratio × steps)` updates then linear decay,
//!   gradient clipping at `max_grad_norm`. Each epoch shuffles the training pairs and re-seeds libtorch from
//!   `(seed, epoch)`; batches are padded to their longest text (queries and documents separately), capped at
//!   the model's max_seq_length. After each epoch: validation loss (both terms, no dropout) on the `val` split
//!   (BEIR's `dev`), early stopping with `train.patience`, and a checkpoint in the stage's working dir.
//!   Without validation pairs there is no early stopping and the last epoch is the output.
//! - **Memory** (`coltrast_torch::train::gradcache`, `coltrast_torch::train::memory`). A batch whose queries and
//!   documents would keep more than `train.max_activation_mb` of activations (an estimate from the model's
//!   shapes) is encoded in micro-batches (GradCache): representations without autograd, the loss and its
//!   gradient on them, then each micro-batch again with autograd, back-propagating its slice. The loss and
//!   gradients are the whole batch's (tested against the one-pass step); dropout in each micro-batch is seeded
//!   from `(seed, step, micro-batch)` in both passes. Before the first step the stage checks that its estimate
//!   (optimizer state, gradients, weight copies, the largest forward pass) fits `train.max_memory_mb` or the
//!   machine's available memory, and otherwise stops with one line saying what to lower. The manifest's
//!   `*_mb` stats say where the peak RSS went.
//! - **Resume.** A checkpoint (weights, AdamW moments, step/schedule position, early-stopping state, the log;
//!   RNG streams are re-derived from the epoch) is committed atomically after every epoch. A run interrupted
//!   in any way (even `kill -9`) resumes after the last committed epoch and ends with the same bytes as an
//!   uninterrupted run (on CPU).
//! - **Measured** on the val split, for the base model (`*_base`, embedded by the base pipeline itself) and
//!   the output model (`*_trained`), by pooled cosine (`coltrast_torch::train::Ranking`): `val_pairwise_acc` (the
//!   positive above its own hard negatives), `val_pooled_negatives_acc` (above every hard negative of the
//!   split), `val_top1` and `val_mrr` (its rank among all val hard negatives and the other val positives),
//!   `val_margin` (cos(positive) − max cos(own hard negatives)).
//!
//! **Inputs.** `mine/pairs.parquet` (splits `train`; `val` or `dev`; `test` is ignored); the base model.
//!
//! **Outputs.**
//! - `model/`: a sentence-transformers model dir (Transformer → Pooling → Dense → Normalize) plus
//!   `coltrast_token_head.safetensors` and `coltrast.json`; see `coltrast_torch::train::export`. It holds the best
//!   epoch's weights (lowest validation loss).
//! - `train_log.parquet`: one row per training step and one per validation pass. `epoch` Int64 (1-based; 0 =
//!   validation of the untrained model), `step` Int64 (training: the update's number, from 1; validation:
//!   updates done before it), `split` Utf8 (`"train"` | `"val"`), `lr` Float64 nullable (training rows),
//!   `loss` Float64, `loss_contrastive` Float64, `loss_late` Float64 (the unweighted terms; `loss` is their
//!   weighted sum), `grad_norm` Float64 nullable (training rows; before clipping).
//! - `training_curves.png`: train (mean over each epoch's steps) and validation loss per epoch, total and
//!   both terms, best epoch marked.
//!
//! **Params.** `train.epochs`, `batch_size`, `learning_rate`, `weight_decay`, `warmup_ratio`,
//! `max_grad_norm`, `temperature`, `contrastive_weight`, `late_interaction_weight`, `embedding_dim`,
//! `token_dim`, `patience`, `seed`, `device` (hashed as the device it resolves to: `cpu` or `cuda`),
//! `base_mix`, `max_activation_mb`, `micro_batch_size`; `max_memory_mb` (not hashed: it only decides whether
//! a run starts).
//!
//! **Example.** `coltrast run train --set train.epochs=3 --set train.device=cpu`

//!
//! **Where.** This module declares the stage (settings, inputs, outputs); its body needs libtorch and lives in
//! the `coltrast-torch` crate (`coltrast_torch::stages::train`), reached through [`crate::backend`].

pub use crate::artifacts::train::{epoch_losses, EpochLoss};
use crate::artifacts::StageId;
use crate::backend::{self, check_device, resolved_device};
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::Result;
use crate::settings::Settings;

pub struct Train;

impl Stage<Settings> for Train {
    fn id(&self) -> StageId {
        StageId::Train
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Mine]
    }
    fn code_version(&self) -> u32 {
        // 3: batches beyond train.max_activation_mb are encoded in micro-batches (GradCache).
        3
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        Settings::key_value(&TrainKey::of(s)?)
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        let mut v = vec![ExternalInput { name: "base_model".into(), path: s.base_model_dir() }];
        if let Some(dir) = s.teacher_dir() {
            v.push(ExternalInput { name: "teacher".into(), path: dir });
        }
        Ok(v)
    }
    fn available(&self) -> bool {
        backend::available()
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        backend::backend()?.train(ctx)
    }
    fn preflight(&self, s: &Settings) -> Result<()> {
        // Without libtorch in this process the run goes to coltrast-torch first (or train is cached).
        match backend::backend() {
            Ok(b) => check_device(s.train.device, b.cuda_built(), b.cuda_available()),
            Err(_) => Ok(()),
        }
    }
}

/// The train stage's cache key: `[train]` with `device` as what it resolves to on this machine (CPU and GPU runs
/// give different bytes). Not in it: `max_memory_mb` (it only decides whether a run may start) and `teacher`
/// (it enters as an input, by its content hash); `distill_weight` only with a teacher.
#[derive(Debug, serde::Serialize)]
pub struct TrainKey {
    pub epochs: u64,
    pub batch_size: u64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub temperature: f64,
    pub contrastive_weight: f64,
    pub late_interaction_weight: f64,
    pub embedding_dim: u64,
    pub token_dim: u64,
    pub patience: u64,
    pub seed: u64,
    pub device: &'static str,
    pub base_mix: crate::settings::BaseMix,
    pub max_activation_mb: u64,
    pub micro_batch_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill_weight: Option<f64>,
}

impl TrainKey {
    pub fn of(s: &Settings) -> Result<Self> {
        let t = &s.train;
        Ok(TrainKey {
            epochs: t.epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            weight_decay: t.weight_decay,
            warmup_ratio: t.warmup_ratio,
            max_grad_norm: t.max_grad_norm,
            temperature: t.temperature,
            contrastive_weight: t.contrastive_weight,
            late_interaction_weight: t.late_interaction_weight,
            embedding_dim: t.embedding_dim,
            token_dim: t.token_dim,
            patience: t.patience,
            seed: t.seed,
            device: resolved_device(t.device)?,
            base_mix: t.base_mix,
            max_activation_mb: t.max_activation_mb,
            micro_batch_size: t.micro_batch_size,
            distill_weight: s.teacher_dir().map(|_| t.distill_weight),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::device_choice;
    use crate::settings::TrainDevice;

    #[test]
    fn cuda_without_the_build_or_the_gpu_says_which() {
        let no_build = check_device(TrainDevice::Cuda, false, false).unwrap_err();
        assert!(no_build.to_string().contains("built without CUDA"), "{no_build}");
        assert!(no_build.to_string().contains("make build GPU=1"), "{no_build}");
        let no_gpu = check_device(TrainDevice::Cuda, true, false).unwrap_err();
        assert!(no_gpu.to_string().contains("sees no CUDA device"), "{no_gpu}");
        for e in [&no_build, &no_gpu] {
            assert_eq!(e.exit_code(), 1);
            assert!(!e.to_string().contains('\n'));
        }
        assert!(check_device(TrainDevice::Cuda, true, true).is_ok());
        for built in [false, true] {
            for gpu in [false, true] {
                assert!(check_device(TrainDevice::Auto, built, gpu).is_ok());
                assert!(check_device(TrainDevice::Cpu, built, gpu).is_ok());
            }
        }
        assert!(device_choice(TrainDevice::Auto, false, false).starts_with("train: on cpu ("));
        assert!(device_choice(TrainDevice::Auto, false, false).contains("no CUDA"));
        assert!(device_choice(TrainDevice::Auto, true, false).contains("sees no CUDA device"));
        assert!(device_choice(TrainDevice::Auto, true, true).starts_with("train: on cuda:0 ("));
        assert!(device_choice(TrainDevice::Cpu, true, true).starts_with("train: on cpu ("));
    }

    #[test]
    fn explicit_devices_resolve_without_libtorch() {
        assert_eq!(resolved_device(TrainDevice::Cpu).unwrap(), "cpu");
        assert_eq!(resolved_device(TrainDevice::Cuda).unwrap(), "cuda");
        let driver = std::path::Path::new("/proc/driver/nvidia/version").exists()
            || std::path::Path::new("/dev/nvidia0").exists();
        if !driver {
            assert_eq!(resolved_device(TrainDevice::Auto).unwrap(), "cpu", "no NVIDIA driver: no GPU for libtorch");
        }
    }
}
