//! The train stage's body (declared in `coltrast::stages::train`, which documents it): ColTrast fine-tuning
//! in libtorch, plus `train_log.parquet` reading and writing.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use tch::Device;

use coltrast::artifacts::train::{log_schema, CURVES, LOG, MODEL_DIR};
use coltrast::artifacts::{pairs, Split, StageId};
use coltrast::backend::{check_device, device_choice};
use coltrast::engine::StageContext;
use coltrast::error::{Error, Result};
use coltrast::settings::{BaseMix, Settings, TrainDevice};
use coltrast::table;

use crate::encoder::Encoder;
use crate::train::export::{self, ColtrastMeta};
use crate::train::{self, memory, ColTrastModel, Example, Hooks, LogRow, TrainConfig};

/// The libtorch device for `train.device`, logged with the reason it was chosen. `"cuda"` without a CUDA build
/// or without a GPU is an error saying which (the engine's preflight asks the same before anything runs).
pub fn resolve_device(d: TrainDevice) -> Result<Device> {
    let available = tch::Cuda::is_available();
    check_device(d, crate::CUDA_BUILT, available)?;
    eprintln!("{}", device_choice(d, crate::CUDA_BUILT, available));
    Ok(match d {
        TrainDevice::Cpu => Device::Cpu,
        TrainDevice::Auto if !available => Device::Cpu,
        TrainDevice::Auto | TrainDevice::Cuda => Device::Cuda(0),
    })
}

/// Mined pairs by split: (`train`, `val` + `dev`, count of others such as `test`).
pub fn split_pairs(pairs: &[pairs::Pair]) -> (Vec<Example>, Vec<Example>, usize) {
    let ex = |p: &pairs::Pair| Example {
        qa_id: p.qa_id.clone(),
        query: p.query.clone(),
        positive: p.positive_text.clone(),
        negatives: p.negative_texts.clone(),
        teacher: vec![],
    };
    let train = pairs.iter().filter(|p| p.split == Split::Train).map(ex).collect();
    let val = pairs.iter().filter(|p| p.split.is_validation()).map(ex).collect();
    let other = pairs.iter().filter(|p| p.split != Split::Train && !p.split.is_validation()).count();
    (train, val, other)
}

/// Scores every example's positive and hard negatives with the teacher (cosines of its unit embeddings,
/// through `cache`, keyed by the teacher's content hash) into [`Example::teacher`]; `embed` embeds the texts
/// the cache lacks. Returns how many texts were embedded.
pub fn score_with_teacher(
    train: &mut [Example],
    val: &mut [Example],
    cache: &mut coltrast::embed::cache::EmbeddingCache,
    dim: usize,
    embed: &mut dyn FnMut(&[&str]) -> Result<Vec<f32>>,
) -> Result<usize> {
    let mut texts: Vec<String> = Vec::new();
    for e in train.iter().chain(val.iter()) {
        texts.push(e.query.clone());
        texts.push(e.positive.clone());
        texts.extend(e.negatives.iter().cloned());
    }
    texts.sort();
    texts.dedup();
    let refs: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    let before = cache.misses;
    let flat = cache.embed(&refs, |missing| embed(missing))?;
    let row: std::collections::HashMap<&str, &[f32]> =
        refs.iter().enumerate().map(|(i, t)| (*t, &flat[i * dim..(i + 1) * dim])).collect();
    let cos = |a: &str, b: &str| -> f32 { row[a].iter().zip(row[b]).map(|(x, y)| x * y).sum() };
    for e in train.iter_mut().chain(val.iter_mut()) {
        e.teacher =
            std::iter::once(cos(&e.query, &e.positive)).chain(e.negatives.iter().map(|n| cos(&e.query, n))).collect();
    }
    Ok(cache.misses - before)
}

/// Run the train stage.
pub fn run(ctx: &mut StageContext<'_, Settings>) -> Result<()> {
    // The stage's own peak, not the earlier stages' of this process.
    let rss_start = memory::rss().now;
    memory::reset_peak();
    let s = ctx.config.train.clone();
    let device = resolve_device(s.device)?;
    if let Some(n) = ctx.config.model.threads {
        crate::encoder::set_num_threads(n.get());
    }
    let pairs = pairs::read_pairs(ctx.upstream_dir(StageId::Mine)?)?;
    let rss_pairs = memory::rss().now;
    let (mut train_set, mut val_set, ignored) = split_pairs(&pairs);
    tracing::info!(train = train_set.len(), val = val_set.len(), ignored, "pairs");
    if ctx.config.teacher_dir().is_none() && ctx.config.train.teacher.trim() == "auto" {
        eprintln!(
            "train: no teacher: train.teacher = \"auto\" distils from all-mpnet-base-v2, which is not installed \
             (`make setup MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\"`, ~440 MB); training without it"
        );
    }
    if let Some(dir) = ctx.config.teacher_dir() {
        let started = std::time::Instant::now();
        let teacher = Encoder::load(&dir, device).map_err(Error::from)?;
        let mut cache =
            coltrast::embed::cache::EmbeddingCache::open(ctx.cache_root(), ctx.input_hash("teacher")?, teacher.dim())?;
        let mut embed = |texts: &[&str]| -> Result<Vec<f32>> {
            let bar = coltrast::progress::bar(texts.len() as u64, "teacher: embedding");
            let mut out = Vec::with_capacity(texts.len() * teacher.dim());
            for group in texts.chunks(64) {
                out.extend(teacher.embed(group, 16).map_err(Error::from)?.data);
                bar.inc(group.len() as u64);
            }
            bar.finish_and_clear();
            Ok(out)
        };
        let n = score_with_teacher(&mut train_set, &mut val_set, &mut cache, teacher.dim(), &mut embed)?;
        cache.flush()?;
        let secs = started.elapsed().as_secs_f64();
        ctx.record_stat("teacher", dir.display().to_string());
        ctx.record_stat("teacher_texts_embedded", n as u64);
        ctx.record_stat("teacher_s", round(secs, 3));
        ctx.record_stat("teacher_peak_rss_mb", round(memory::rss().peak as f64 / memory::MIB, 3));
        eprintln!("train: teacher {} scored the pairs ({n} texts embedded, {secs:.1} s)", dir.display());
    }
    if train_set.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no pairs with split \"train\" (splits found: {:?}); nothing to train on",
            ctx.upstream_file(StageId::Mine, pairs::PAIRS)?.display(),
            pairs.iter().map(|p| p.split.as_str()).collect::<std::collections::BTreeSet<_>>()
        )));
    }
    if val_set.is_empty() {
        eprintln!("train: no validation pairs (split \"val\" or \"dev\"): early stopping is off and the last epoch is the output");
    }
    let base_dir = ctx.config.base_model_dir();
    let rss_before_model = memory::rss().now;
    let encoder = Encoder::load(&base_dir, device).map_err(Error::from)?;
    let rss_model = memory::rss().now.saturating_sub(rss_before_model);

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
    // Step 0's weights: the base model (with the Dense head at its start), for weight averaging.
    let start = model.snapshot();
    let cfg = TrainConfig::from(&s);
    let work = ctx.work_dir()?.to_path_buf();
    let outcome = {
        let fault = |p: &str| ctx.fault_point(p);
        let hooks = Hooks { fault_point: &fault, progress: true };
        train::train(&cfg, &mut model, &train_set, &val_set, &work, &hooks)?
    };

    let mix = choose_base_mix(&mut model, &start, s.base_mix, &val_set)?;
    ctx.record_stat("base_mix", mix.chosen);
    for (share, mrr) in &mix.tried {
        ctx.record_stat(&format!("val_mrr_base_mix_{share}"), round(*mrr, 6));
    }
    if !mix.tried.is_empty() {
        let tried: Vec<String> = mix.tried.iter().map(|(w, m)| format!("{w}: {m:.3}")).collect();
        eprintln!(
            "train: base_mix on validation (share of base weights: val MRR): {}; chose {}",
            tried.join(", "),
            mix.chosen
        );
    }

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
    record_memory(ctx, &outcome.memory, rss_start, rss_pairs.saturating_sub(rss_start), rss_model);
    let epoch_mean = |e: u64| {
        let v: Vec<f64> = outcome.log.iter().filter(|r| r.split == "train" && r.epoch == e).map(|r| r.loss).collect();
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

/// The memory stats of the manifest (MiB, three decimals): where the stage's peak RSS came from. `*_peak_mb`
/// are the peaks of each phase (absolute RSS); the others are sizes or RSS growth.
fn record_memory(
    ctx: &mut StageContext<'_, Settings>,
    m: &train::MemoryReport,
    rss_start: u64,
    rss_pairs: u64,
    rss_model: u64,
) {
    let mib = |b: u64| round(b as f64 / memory::MIB, 3);
    ctx.record_stat("rss_stage_start_mb", mib(rss_start));
    ctx.record_stat("rss_pairs_mb", mib(rss_pairs));
    ctx.record_stat("rss_model_load_mb", mib(rss_model));
    ctx.record_stat("rss_texts_mb", mib(m.rss_texts));
    ctx.record_stat("weights_mb", mib(m.weights));
    ctx.record_stat("optimizer_state_mb", mib(m.optimizer));
    ctx.record_stat("rss_before_steps_mb", mib(m.rss_before_steps));
    ctx.record_stat("steps_peak_mb", mib(m.peak_steps));
    ctx.record_stat("activations_mb", mib(m.peak_steps.saturating_sub(m.rss_before_steps)));
    ctx.record_stat("activations_estimate_mb", mib(m.activation_estimate));
    ctx.record_stat("maxsim_mb", mib(m.maxsim));
    ctx.record_stat("validation_peak_mb", mib(m.peak_validation));
    ctx.record_stat("checkpoint_peak_mb", mib(m.peak_checkpoint));
    ctx.record_stat("validation_growth_mb", mib(m.growth_validation));
    ctx.record_stat("checkpoint_growth_mb", mib(m.growth_checkpoint));
    ctx.record_stat("max_passes_per_step", m.max_passes as u64);
    ctx.record_stat("phase_peaks", m.phase_peaks);
    // Everything since the stage started (export of the model dir and base_mix included).
    let end = memory::rss().peak;
    ctx.record_stat("end_peak_mb", mib(end));
    ctx.record_stat("peak_rss_mb", mib(end.max(m.peak_steps).max(m.peak_validation).max(m.peak_checkpoint)));
}

/// What [`choose_base_mix`] did: the share kept, and (for `"auto"`) each share tried with its validation MRR.
pub struct MixChoice {
    pub chosen: f64,
    pub tried: Vec<(f64, f64)>,
}

/// `weights = share * start + (1 - share) * trained` for every tensor but the token head (which has no base:
/// it starts random and stays as trained).
pub fn blend(
    start: &[(String, tch::Tensor)],
    trained: &[(String, tch::Tensor)],
    share: f64,
) -> Vec<(String, tch::Tensor)> {
    let _guard = tch::no_grad_guard();
    trained
        .iter()
        .map(|(name, t)| {
            let mixed = match start.iter().find(|(n, _)| n == name) {
                Some((_, b)) if !name.starts_with("token_head.") && share > 0.0 => {
                    b.to_device(t.device()) * share + t * (1.0 - share)
                }
                _ => t.shallow_clone(),
            };
            (name.clone(), mixed)
        })
        .collect()
}

/// Apply `train.base_mix` to the trained `model`: a fixed share, or under `"auto"` the share of
/// [`BaseMix::GRID`] with the best validation ranking (MRR of the positive among the pooled hard negatives and
/// the other positives; ties go to the pooled-negative accuracy, then the margin, then the smaller share).
pub fn choose_base_mix(
    model: &mut ColTrastModel,
    start: &[(String, tch::Tensor)],
    setting: BaseMix,
    val: &[Example],
) -> Result<MixChoice> {
    let trained = model.snapshot();
    let fixed = match setting {
        BaseMix::Fixed(x) => Some(x),
        BaseMix::Auto if val.is_empty() => Some(0.0),
        BaseMix::Auto => None,
    };
    if let Some(x) = fixed {
        if x > 0.0 {
            model.load_parameters(&blend(start, &trained, x), "base_mix")?;
        }
        return Ok(MixChoice { chosen: x, tried: vec![] });
    }
    let mut tried = Vec::new();
    let mut best: Option<(f64, (f64, f64, f64))> = None;
    for share in BaseMix::GRID {
        model.load_parameters(&blend(start, &trained, share), "base_mix")?;
        let mut embed = |texts: &[&str]| -> Result<Vec<Vec<f32>>> { train::tensor_rows(&model.embed(texts, 64)?) };
        let r = train::ranking(val, &mut embed)?;
        tried.push((share, r.mrr));
        let key = (r.mrr, r.pooled, r.margin);
        if best.is_none_or(|(_, b)| key > b) {
            best = Some((share, key));
        }
    }
    let chosen = best.map(|b| b.0).unwrap_or(0.0);
    model.load_parameters(&blend(start, &trained, chosen), "base_mix")?;
    Ok(MixChoice { chosen, tried })
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

    fn pair(qa: &str, split: &str) -> pairs::Pair {
        pairs::Pair {
            qa_id: qa.into(),
            project_id: "p".into(),
            split: split.parse().unwrap(),
            query: format!("q {qa}"),
            positive_text: format!("pos {qa}"),
            positive_chunk_id: None,
            positive_source: "answer".into(),
            positive_score: 0.5,
            negative_chunk_ids: vec!["c".into()],
            negative_texts: vec!["neg".into()],
            negative_scores: vec![0.1],
            source: pairs::LABELLED.into(),
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
    fn teacher_scores_are_cosines_of_the_cached_embeddings() {
        let pairs = [pair("a", "train"), pair("b", "val")];
        let (mut train, mut val, _) = split_pairs(&pairs);
        let dir = tempfile::tempdir().unwrap();
        let mut cache = coltrast::embed::cache::EmbeddingCache::open(dir.path(), "teacher-test", 2).unwrap();
        // "q ..." texts point along x, "pos ..." at 60 degrees, "neg" along y
        let vec_of = |t: &str| -> [f32; 2] {
            if t.starts_with("q ") {
                [1.0, 0.0]
            } else if t.starts_with("pos") {
                [0.5, 0.866_025_4]
            } else {
                [0.0, 1.0]
            }
        };
        let mut calls = 0;
        let mut embed = |texts: &[&str]| -> Result<Vec<f32>> {
            calls += 1;
            Ok(texts.iter().flat_map(|t| vec_of(t)).collect())
        };
        let n = score_with_teacher(&mut train, &mut val, &mut cache, 2, &mut embed).unwrap();
        assert_eq!(n, 5, "q a, q b, pos a, pos b, neg");
        for e in train.iter().chain(&val) {
            assert_eq!(e.teacher.len(), 1 + e.negatives.len());
            assert!((e.teacher[0] - 0.5).abs() < 1e-6 && e.teacher[1].abs() < 1e-6, "{:?}", e.teacher);
        }
        // a second run embeds nothing: the cache has every text
        let n = score_with_teacher(&mut train, &mut val, &mut cache, 2, &mut embed).unwrap();
        assert_eq!((n, calls), (0, 1));
    }

    #[test]
    fn device_setting_is_hashed_as_what_libtorch_resolves() {
        crate::register();
        let s = Settings::default();
        let t = coltrast::stages::STAGES
            .iter()
            .find(|st| st.id() == coltrast::artifacts::StageId::Train)
            .unwrap()
            .settings(&s)
            .unwrap();
        let want = if tch::Cuda::is_available() { "cuda" } else { "cpu" };
        assert_eq!(t.get("device").and_then(|v| v.as_str()), Some(want));
    }
}
