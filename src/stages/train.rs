//! # train: ColTrast fine-tuning
//!
//! **What.** Fine-tunes the base encoder on the mined pairs with the ColTrast objective
//! `L = w_c · L_contrastive + w_li · L_late` and writes a sentence-transformers model dir.
//!
//! - **Model** ([`crate::train::model`]). The BERT encoder with BERT's dropout while training (off in
//!   evaluation) and two heads. Pooled head: mean pooling → Dense `[D, H]` → L2 normalisation, starting as the
//!   identity so that step 0 embeds exactly as the base model. Token head: Dense `[T, H]` on every token's
//!   hidden state → per-token L2 normalisation (ColBERT), starting as a seeded random projection.
//! - **L_contrastive** ([`crate::train::loss`]). InfoNCE over cosines of pooled embeddings divided by
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
//! - **Loop** ([`crate::train::train`]). AdamW (β 0.9/0.999, ε 1e-8; weight decay on weight matrices, not on
//!   biases or LayerNorms), linear warm-up over `ceil(warmup_ratio × steps)` updates then linear decay,
//!   gradient clipping at `max_grad_norm`. Each epoch shuffles the training pairs and re-seeds libtorch from
//!   `(seed, epoch)`; batches are padded to their longest text (queries and documents separately), capped at
//!   the model's max_seq_length. After each epoch: validation loss (both terms, no dropout) on the `val` split
//!   (BEIR's `dev`), early stopping with `train.patience`, and a checkpoint in the stage's working dir.
//!   Without validation pairs there is no early stopping and the last epoch is the output.
//! - **Resume.** A checkpoint (weights, AdamW moments, step/schedule position, early-stopping state, the log;
//!   RNG streams are re-derived from the epoch) is committed atomically after every epoch. A run interrupted
//!   in any way (even `kill -9`) resumes after the last committed epoch and ends with the same bytes as an
//!   uninterrupted run (on CPU).
//! - **Measured** on the val split, for the base model (`*_base`, embedded by the base pipeline itself) and
//!   the output model (`*_trained`), by pooled cosine ([`crate::train::Ranking`]): `val_pairwise_acc` (the
//!   positive above its own hard negatives), `val_pooled_negatives_acc` (above every hard negative of the
//!   split), `val_top1` and `val_mrr` (its rank among all val hard negatives and the other val positives),
//!   `val_margin` (cos(positive) − max cos(own hard negatives)).
//!
//! **Inputs.** `mine/pairs.parquet` (splits `train`; `val` or `dev`; `test` is ignored); the base model.
//!
//! **Outputs.**
//! - `model/`: a sentence-transformers model dir (Transformer → Pooling → Dense → Normalize) plus
//!   `coltrast_token_head.safetensors` and `coltrast.json`; see [`crate::train::export`]. It holds the best
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
//! `token_dim`, `patience`, `seed`, `device` (hashed as the device it resolves to: `cpu` or `cuda`).
//!
//! **Example.** `coltrast run train --set train.epochs=3 --set train.device=cpu`

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use tch::Device;

use crate::encoder::Encoder;
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::settings::{Settings, TrainDevice};
use crate::stages::mine;
use crate::table;
use crate::train::export::{self, ColtrastMeta};
use crate::train::{self, ColTrastModel, Example, Hooks, LogRow, TrainConfig};

pub const MODEL_DIR: &str = "model";
pub const LOG: &str = "train_log.parquet";
pub const CURVES: &str = "training_curves.png";

pub fn log_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("step", DataType::Int64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("lr", DataType::Float64, true),
        Field::new("loss", DataType::Float64, false),
        Field::new("loss_contrastive", DataType::Float64, false),
        Field::new("loss_late", DataType::Float64, false),
        Field::new("grad_norm", DataType::Float64, true),
    ]))
}

/// The libtorch device for `train.device`.
pub fn resolve_device(d: TrainDevice) -> Result<Device> {
    match d {
        TrainDevice::Auto => Ok(Device::cuda_if_available()),
        TrainDevice::Cpu => Ok(Device::Cpu),
        TrainDevice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        TrainDevice::Cuda => {
            Err(Error::Usage("train.device = \"cuda\" but libtorch sees no GPU; use \"auto\" or \"cpu\"".into()))
        }
    }
}

/// Mined pairs by split: (`train`, `val` + `dev`, count of others such as `test`).
pub fn split_pairs(pairs: &[mine::Pair]) -> (Vec<Example>, Vec<Example>, usize) {
    let ex = |p: &mine::Pair| Example {
        qa_id: p.qa_id.clone(),
        query: p.query.clone(),
        positive: p.positive_text.clone(),
        negatives: p.negative_texts.clone(),
    };
    let train = pairs.iter().filter(|p| p.split == "train").map(ex).collect();
    let val = pairs.iter().filter(|p| p.split == "val" || p.split == "dev").map(ex).collect();
    let other = pairs.iter().filter(|p| !matches!(p.split.as_str(), "train" | "val" | "dev")).count();
    (train, val, other)
}

pub struct Train;

impl Stage<Settings> for Train {
    fn name(&self) -> &'static str {
        "train"
    }
    fn upstream(&self) -> &'static [&'static str] {
        &["mine"]
    }
    fn code_version(&self) -> u32 {
        1
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        let mut t = s.section("train")?;
        if let Some(t) = t.as_table_mut() {
            // "auto" is hashed as what it means on this machine: CPU and GPU runs give different bytes.
            let resolved = match resolve_device(s.train.device) {
                Ok(Device::Cpu) => "cpu",
                _ => "cuda",
            };
            t.insert("device".into(), toml::Value::String(resolved.into()));
        }
        Ok(t)
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![ExternalInput { name: "base_model".into(), path: s.base_model_dir() }])
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config.train.clone();
        let device = resolve_device(s.device)?;
        if ctx.config.model.threads > 0 {
            crate::encoder::set_num_threads(ctx.config.model.threads as usize);
        }
        let pairs = mine::read_pairs(ctx.upstream_dir("mine")?)?;
        let (train_set, val_set, ignored) = split_pairs(&pairs);
        tracing::info!(train = train_set.len(), val = val_set.len(), ignored, "pairs");
        if train_set.is_empty() {
            return Err(Error::Usage(format!(
                "{}: no pairs with split \"train\" (splits found: {:?}); nothing to train on",
                ctx.upstream_file("mine", mine::PAIRS)?.display(),
                pairs.iter().map(|p| p.split.as_str()).collect::<std::collections::BTreeSet<_>>()
            )));
        }
        if val_set.is_empty() {
            eprintln!("train: no validation pairs (split \"val\" or \"dev\"): early stopping is off and the last epoch is the output");
        }
        let base_dir = ctx.config.base_model_dir();
        let encoder = Encoder::load(&base_dir, device).map_err(Error::from)?;

        // The base model's ranking on val, by the base pipeline itself (mean pooling + normalisation).
        let base_rank = if val_set.is_empty() {
            None
        } else {
            let mut embed = |texts: &[&str]| -> Result<Vec<Vec<f32>>> {
                let e = encoder.embed(texts, 64).map_err(Error::from)?;
                Ok(e.rows().map(|r| r.to_vec()).collect())
            };
            Some(train::ranking(&val_set, &mut embed)?)
        };

        let hidden = encoder.dim();
        let dim = if s.embedding_dim == 0 { hidden } else { s.embedding_dim as usize };
        let pca_texts = if dim < hidden {
            let texts: Vec<&str> = train_set
                .iter()
                .flat_map(|e| {
                    std::iter::once(e.query.as_str())
                        .chain(std::iter::once(e.positive.as_str()))
                        .chain(e.negatives.iter().map(|n| n.as_str()))
                })
                .collect();
            encoder.tokenize(&texts).map_err(Error::from)?
        } else {
            Vec::new()
        };
        let mut model = ColTrastModel::new(encoder, dim, s.token_dim as usize, s.seed as u64, &pca_texts)?;
        let cfg = TrainConfig::from(&s);
        let work = ctx.work_dir()?.to_path_buf();
        let outcome = {
            let fault = |p: &str| ctx.fault_point(p);
            let hooks = Hooks { fault_point: &fault, progress: true };
            train::train(&cfg, &mut model, &train_set, &val_set, &work, &hooks)?
        };

        let meta = ColtrastMeta {
            embedding_dim: model.embedding_dim(),
            token_dim: model.token_dim(),
            temperature: s.temperature,
            contrastive_weight: s.contrastive_weight,
            late_interaction_weight: s.late_interaction_weight,
            base_model_blake3: ctx.input_hash("base_model")?.to_string(),
            maxsim_scale: model.maxsim_affine().0,
            maxsim_shift: model.maxsim_affine().1,
            maxsim_tokens: export::MAXSIM_TOKENS.to_string(),
        };
        export::write_model_dir(&ctx.output(MODEL_DIR), &base_dir, &model, &meta)?;
        let rows = write_log(&ctx.output(LOG), &outcome.log)?;
        ctx.record_rows(LOG, rows);
        let best = (!val_set.is_empty()).then_some(outcome.best_epoch);
        train::plot::training_curves(&ctx.output(CURVES), &outcome.log, best)?;

        ctx.record_stat("train_pairs", train_set.len() as u64);
        ctx.record_stat("val_pairs", val_set.len() as u64);
        if ignored > 0 {
            ctx.record_stat("ignored_pairs", ignored as u64);
        }
        ctx.record_stat("device", format!("{device:?}").to_lowercase());
        ctx.record_stat("steps", outcome.steps);
        ctx.record_stat("epochs_run", outcome.epochs_run);
        ctx.record_stat("best_epoch", outcome.best_epoch);
        ctx.record_stat("stopped_early", outcome.stopped_early);
        ctx.record_stat("steps_per_s", round(outcome.steps_per_s, 4));
        if let Some(e) = outcome.resumed_after {
            ctx.record_stat("resumed_after_epoch", e);
        }
        let epoch_mean = |e: u64| {
            let v: Vec<f64> =
                outcome.log.iter().filter(|r| r.split == "train" && r.epoch == e).map(|r| r.loss).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        if let (Some(first), Some(last)) = (epoch_mean(1), epoch_mean(outcome.epochs_run)) {
            ctx.record_stat("train_loss_first_epoch", round(first, 6));
            ctx.record_stat("train_loss_last_epoch", round(last, 6));
        }
        if let Some(v) = outcome.log.iter().find(|r| r.split == "val" && r.epoch == 0) {
            ctx.record_stat("val_loss_base", round(v.loss, 6));
        }
        if let Some(v) = outcome.best_val_loss {
            ctx.record_stat("val_loss_best", round(v, 6));
        }
        if let Some(base) = base_rank {
            let mut embed = |texts: &[&str]| -> Result<Vec<Vec<f32>>> { train::tensor_rows(&model.embed(texts, 64)?) };
            let tuned = train::ranking(&val_set, &mut embed)?;
            ctx.record_stat("val_comparisons", base.comparisons as u64);
            for (name, b, t) in [
                ("pairwise_acc", base.pairwise, tuned.pairwise),
                ("pooled_negatives_acc", base.pooled, tuned.pooled),
                ("top1", base.top1, tuned.top1),
                ("mrr", base.mrr, tuned.mrr),
                ("margin", base.margin, tuned.margin),
            ] {
                ctx.record_stat(&format!("val_{name}_base"), round(b, 6));
                ctx.record_stat(&format!("val_{name}_trained"), round(t, 6));
            }
            eprintln!(
                "train: val (best epoch {}): positive above own hard negatives {:.1}% -> {:.1}% ({} comparisons); \
                 above all val hard negatives {:.1}% -> {:.1}%; first among them and the other positives {:.1}% -> {:.1}%; \
                 MRR {:.3} -> {:.3}; margin {:.3} -> {:.3} (base -> fine-tuned)",
                outcome.best_epoch,
                base.pairwise * 100.0,
                tuned.pairwise * 100.0,
                base.comparisons,
                base.pooled * 100.0,
                tuned.pooled * 100.0,
                base.top1 * 100.0,
                tuned.top1 * 100.0,
                base.mrr,
                tuned.mrr,
                base.margin,
                tuned.margin
            );
        }
        Ok(())
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Writes `train_log.parquet` (schema: [`log_schema`]).
pub fn write_log(path: &Path, log: &[LogRow]) -> Result<u64> {
    let f = |g: fn(&LogRow) -> f64| -> ArrayRef { Arc::new(Float64Array::from_iter_values(log.iter().map(g))) };
    table::write_parquet(
        path,
        log_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(log.iter().map(|r| r.epoch as i64))),
            Arc::new(Int64Array::from_iter_values(log.iter().map(|r| r.step as i64))),
            Arc::new(StringArray::from_iter_values(log.iter().map(|r| r.split.as_str()))),
            Arc::new(Float64Array::from_iter(log.iter().map(|r| r.lr))),
            f(|r| r.loss),
            f(|r| r.loss_contrastive),
            f(|r| r.loss_late),
            Arc::new(Float64Array::from_iter(log.iter().map(|r| r.grad_norm))),
        ],
    )
}

/// Reads `train_log.parquet` back.
pub fn read_log(dir: &Path) -> Result<Vec<LogRow>> {
    let path = dir.join(LOG);
    let b = table::read_parquet(&path, "train", &log_schema())?;
    let i = |n: &str| table::i64_col(&b, n);
    let f = |n: &str| {
        b.column_by_name(n)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .ok_or_else(|| Error::internal(format!("column {n} is not Float64")))
    };
    let (epoch, step, split) = (i("epoch")?, i("step")?, table::str_col(&b, "split")?);
    let (lr, loss, lc, ll, gn) = (f("lr")?, f("loss")?, f("loss_contrastive")?, f("loss_late")?, f("grad_norm")?);
    use arrow::array::Array;
    Ok((0..b.num_rows())
        .map(|k| LogRow {
            epoch: epoch.value(k) as u64,
            step: step.value(k) as u64,
            split: split.value(k).to_string(),
            lr: (!lr.is_null(k)).then(|| lr.value(k)),
            loss: loss.value(k),
            loss_contrastive: lc.value(k),
            loss_late: ll.value(k),
            grad_norm: (!gn.is_null(k)).then(|| gn.value(k)),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(qa: &str, split: &str) -> mine::Pair {
        mine::Pair {
            qa_id: qa.into(),
            project_id: "p".into(),
            split: split.into(),
            query: format!("q {qa}"),
            positive_text: format!("pos {qa}"),
            positive_chunk_id: None,
            positive_source: "answer".into(),
            positive_score: 0.5,
            negative_chunk_ids: vec!["c".into()],
            negative_texts: vec!["neg".into()],
            negative_scores: vec![0.1],
        }
    }

    #[test]
    fn beir_dev_is_validation_and_test_is_left_out() {
        let pairs = [pair("a", "train"), pair("b", "dev"), pair("c", "val"), pair("d", "test")];
        let (train, val, other) = split_pairs(&pairs);
        assert_eq!(train.iter().map(|e| e.qa_id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(val.iter().map(|e| e.qa_id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(other, 1);
        assert_eq!(train[0].negatives, ["neg"]);
    }

    #[test]
    fn device_setting_is_hashed_as_what_it_resolves_to() {
        let s = Settings::default();
        let t = Train.settings(&s).unwrap();
        let want = if tch::Cuda::is_available() { "cuda" } else { "cpu" };
        assert_eq!(t.get("device").and_then(|v| v.as_str()), Some(want));
    }
}
