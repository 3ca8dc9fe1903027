//! ColTrast fine-tuning on libtorch: the model ([`model`]), the objective ([`loss`]), AdamW, schedule and
//! early stopping ([`optim`]), checkpoints ([`checkpoint`]), the sentence-transformers model dir
//! ([`export`]) and the training curves ([`plot`]). The `train` stage ([`coltrast::stages::train`]) is a thin
//! caller of [`train`]; tests and the benchmark call the same functions.

pub mod checkpoint;
pub mod export;
pub mod gradcache;
pub mod loss;
pub mod memory;
pub mod model;
pub mod optim;
pub mod plot;
pub mod rng;
pub mod stage;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::encoder::{pad_batch, Batch, TokenizedText};
use coltrast::error::{Error, Result};
use coltrast::settings::TrainSettings;
pub use loss::{BatchPlan, Example};
pub use model::ColTrastModel;
use optim::{AdamW, EarlyStopping, Schedule};

/// What the loop needs from the settings (everything here changes the result).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    pub epochs: u64,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub temperature: f64,
    pub contrastive_weight: f64,
    pub late_interaction_weight: f64,
    pub patience: u64,
    pub seed: u64,
    /// Activation budget of one forward pass, MiB (0 = none); see [`gradcache`].
    pub max_activation_mb: u64,
    /// Texts per forward pass when micro-batching (0 = from the budget).
    pub micro_batch_size: usize,
    /// Weight of the distillation term (used only when the examples carry teacher scores).
    #[serde(default)]
    pub distill_weight: f64,
    /// What the run may take, MiB (0 = what the machine has); decides only whether it starts.
    #[serde(skip)]
    pub max_memory_mb: u64,
}

impl From<&TrainSettings> for TrainConfig {
    fn from(s: &TrainSettings) -> Self {
        TrainConfig {
            epochs: s.epochs.max(1) as u64,
            batch_size: s.batch_size.max(1) as usize,
            learning_rate: s.learning_rate,
            weight_decay: s.weight_decay,
            warmup_ratio: s.warmup_ratio,
            max_grad_norm: s.max_grad_norm,
            temperature: s.temperature,
            contrastive_weight: s.contrastive_weight,
            late_interaction_weight: s.late_interaction_weight,
            patience: s.patience.max(0) as u64,
            seed: s.seed.max(0) as u64,
            max_activation_mb: s.max_activation_mb.max(0) as u64,
            micro_batch_size: s.micro_batch_size.max(0) as usize,
            max_memory_mb: s.max_memory_mb.max(0) as u64,
            distill_weight: s.distill_weight.max(0.0),
        }
    }
}

/// One row of `train_log.parquet`: a training step, or a validation pass at the end of an epoch.
/// (In checkpoints, floats are stored as their bit patterns: serde_json's float parsing is not exact.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// 1-based; 0 is the validation pass of the untrained model.
    pub epoch: u64,
    /// Global step: for a training row, the update it reports (1-based); for a validation row, the updates
    /// done before it.
    pub step: u64,
    /// "train" or "val".
    pub split: String,
    /// Learning rate of the update (training rows only).
    #[serde(with = "opt_f64_bits")]
    pub lr: Option<f64>,
    #[serde(with = "f64_bits")]
    pub loss: f64,
    #[serde(with = "f64_bits")]
    pub loss_contrastive: f64,
    #[serde(with = "f64_bits")]
    pub loss_late: f64,
    /// Global gradient norm before clipping (training rows only).
    #[serde(with = "opt_f64_bits")]
    pub grad_norm: Option<f64>,
}

impl LogRow {
    /// A validation pass after `step` updates: `losses` = (total, contrastive, late).
    pub fn validation(epoch: u64, step: u64, losses: (f64, f64, f64)) -> LogRow {
        let (loss, loss_contrastive, loss_late) = losses;
        LogRow { epoch, step, split: "val".into(), lr: None, loss, loss_contrastive, loss_late, grad_norm: None }
    }
}

/// Serde for `f64` as its bit pattern (exact round trip through JSON).
pub mod f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(x.to_bits())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(f64::from_bits(u64::deserialize(d)?))
    }
}

/// Serde for `Option<f64>` as its bit pattern.
pub mod opt_f64_bits {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match x {
            Some(v) => s.serialize_some(&v.to_bits()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(f64::from_bits))
    }
}

/// What the caller sees of a run.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub log: Vec<LogRow>,
    /// The epoch whose weights the model now holds (the best on validation, else the last).
    pub best_epoch: u64,
    pub best_val_loss: Option<f64>,
    pub epochs_run: u64,
    pub stopped_early: bool,
    pub steps: u64,
    /// The epoch a checkpoint let this run start after, if any.
    pub resumed_after: Option<u64>,
    /// Updates per second in this process (not counting validation).
    pub steps_per_s: f64,
    /// Where the memory went.
    pub memory: MemoryReport,
}

/// Memory of one [`train`] call: resident set sizes (bytes) measured at its phases, and sizes computed from
/// tensor shapes. Peaks are per phase where Linux lets the peak be reset (see [`memory::reset_peak`]),
/// otherwise cumulative.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryReport {
    /// RSS when `train` was called (the process, libtorch, the model, the caller's data).
    pub rss_entry: u64,
    /// RSS growth from tokenising the training and validation texts.
    pub rss_texts: u64,
    /// Bytes of the weights (all trainable tensors).
    pub weights: u64,
    /// Bytes of AdamW's moments.
    pub optimizer: u64,
    /// RSS just before the first step.
    pub rss_before_steps: u64,
    /// Peak RSS during the training steps.
    pub peak_steps: u64,
    /// Peak RSS during validation passes.
    pub peak_validation: u64,
    /// Peak RSS while writing checkpoints.
    pub peak_checkpoint: u64,
    /// Largest RSS growth of one validation pass (its peak minus the RSS when it started).
    pub growth_validation: u64,
    /// Largest RSS growth while writing one checkpoint.
    pub growth_checkpoint: u64,
    /// Estimated activations of the largest forward pass of any step ([`memory::ActivationModel`]).
    pub activation_estimate: u64,
    /// Bytes of the largest MaxSim similarity tensor (`pairs × query tokens × document tokens` floats).
    pub maxsim: u64,
    /// Most forward passes in one step (2 = queries and documents in one pass each).
    pub max_passes: usize,
    /// Whether the phase peaks could be reset (else they are cumulative).
    pub phase_peaks: bool,
}

/// Test hooks and display options.
pub struct Hooks<'a> {
    /// Called with `step-<n>` before update n and `epoch-<e>` after epoch e's checkpoint is committed.
    pub fault_point: &'a dyn Fn(&str),
    /// Show a progress bar on stderr (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

impl Default for Hooks<'_> {
    fn default() -> Self {
        Hooks { fault_point: &|_| {}, progress: false }
    }
}

/// Every distinct text of the examples, tokenised once (truncated to the model's max_seq_length).
pub struct Texts {
    tokens: HashMap<String, TokenizedText>,
    pad_id: i64,
}

impl Texts {
    pub fn new(model: &ColTrastModel, sets: &[&[Example]]) -> Result<Texts> {
        let mut all: BTreeSet<&str> = BTreeSet::new();
        for set in sets {
            for e in set.iter() {
                all.insert(&e.query);
                all.insert(&e.positive);
                all.extend(e.negatives.iter().map(|s| s.as_str()));
            }
        }
        let list: Vec<&str> = all.into_iter().collect();
        let toks = model.encoder().tokenize(&list).map_err(Error::from)?;
        let tokens = list.iter().map(|s| s.to_string()).zip(toks).collect();
        Ok(Texts { tokens, pad_id: model.encoder().config().pad_token_id })
    }

    /// A padded batch of known texts on `device`.
    pub fn batch(&self, texts: &[&str], device: tch::Device) -> Result<Batch> {
        let items: Vec<&TokenizedText> = texts
            .iter()
            .map(|t| self.tokens.get(*t).ok_or_else(|| Error::internal("text was not tokenised")))
            .collect::<Result<_>>()?;
        Ok(pad_batch(&items, self.pad_id, device))
    }

    pub fn get(&self, text: &str) -> Option<&TokenizedText> {
        self.tokens.get(text)
    }
}

/// The three losses of one batch (scalars; with autograd history when computed outside `no_grad`).
pub struct BatchLoss {
    pub total: Tensor,
    pub contrastive: Tensor,
    pub late: Tensor,
}

/// Encodes a batch (queries in one pass, its distinct documents in another, each padded to its longest
/// text) and computes the ColTrast loss. Dropout is on when `train`.
pub fn batch_loss(
    model: &ColTrastModel,
    texts: &Texts,
    batch: &[&Example],
    cfg: &TrainConfig,
    train: bool,
) -> Result<BatchLoss> {
    let plan = BatchPlan::new(batch);
    let device = model.device();
    let queries: Vec<&str> = batch.iter().map(|e| e.query.as_str()).collect();
    let docs: Vec<&str> = plan.docs.iter().map(|s| s.as_str()).collect();
    let q = model.encode(&texts.batch(&queries, device)?, train);
    let d = model.encode(&texts.batch(&docs, device)?, train);
    Ok(plan_loss(model, &q, &d, &plan, cfg))
}

/// The ColTrast loss of a batch from its encoded queries (rows in batch order) and documents (rows in
/// `plan.docs` order).
pub fn plan_loss(
    model: &ColTrastModel,
    q: &model::Encoded,
    d: &model::Encoded,
    plan: &BatchPlan,
    cfg: &TrainConfig,
) -> BatchLoss {
    let device = model.device();
    let n_queries = plan.labels.len() as i64;
    let n_docs = plan.docs.len() as i64;
    let candidates = Tensor::from_slice(&plan.candidates).view([n_queries, n_docs]).to_device(device);
    let labels = Tensor::from_slice(&plan.labels).to_device(device);
    let contrastive = loss::info_nce(&q.pooled, &d.pooled, &candidates, &labels, cfg.temperature);
    let qi = Tensor::from_slice(&plan.late_query).to_device(device);
    let di = Tensor::from_slice(&plan.late_doc).to_device(device);
    let y = Tensor::from_slice(&plan.late_label).to_device(device);
    let scores = loss::maxsim(&q.tokens, &q.mask, &d.tokens, &d.mask, &qi, &di);
    let (scale, shift) = model.maxsim_affine();
    let late = loss::late_bce(&scores, &y, scale, shift);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let s = Vec::<f32>::try_from(scores.detach().to_device(tch::Device::Cpu)).unwrap_or_default();
        let mean = |label: f32| {
            let v: Vec<f32> = s.iter().zip(&plan.late_label).filter(|(_, l)| **l == label).map(|(x, _)| *x).collect();
            v.iter().sum::<f32>() / v.len().max(1) as f32
        };
        tracing::debug!(positive = mean(1.0), negative = mean(0.0), "mean MaxSim score");
    }
    let mut total = &contrastive * cfg.contrastive_weight + &late * cfg.late_interaction_weight;
    if let (Some(dl), true) = (&plan.distill, cfg.distill_weight > 0.0) {
        let shape = [n_queries, dl.width as i64];
        let cols = Tensor::from_slice(&dl.cols).view(shape).to_device(device);
        let teacher = Tensor::from_slice(&dl.teacher).view(shape).to_device(device);
        let mask = Tensor::from_slice(&dl.mask).view(shape).to_device(device);
        let kl = loss::distill_kl(&q.pooled, &d.pooled, &cols, &teacher, &mask, cfg.temperature);
        total = total + kl * cfg.distill_weight;
    }
    BatchLoss { total, contrastive, late }
}

/// Mean losses over `examples` in evaluation mode (no dropout, no gradients), batches of `batch_size` in
/// the given order, weighted by batch size: `(total, contrastive, late)`.
pub fn evaluate(
    model: &ColTrastModel,
    texts: &Texts,
    examples: &[Example],
    cfg: &TrainConfig,
) -> Result<(f64, f64, f64)> {
    let _guard = tch::no_grad_guard();
    let act = memory::ActivationModel::new(model.encoder().config(), model.token_dim());
    let (mut t, mut c, mut l, mut n) = (0.0, 0.0, 0.0, 0usize);
    for chunk in examples.chunks(cfg.batch_size) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = gradcache::eval_loss(model, texts, &refs, cfg, &act)?;
        let k = chunk.len() as f64;
        t += b.total.double_value(&[]) * k;
        c += b.contrastive.double_value(&[]) * k;
        l += b.late.double_value(&[]) * k;
        n += chunk.len();
    }
    let n = n.max(1) as f64;
    Ok((t / n, c / n, l / n))
}

/// How well pooled embeddings rank each query's positive (by cosine) on a set of examples:
///
/// - `pairwise`: the fraction of (query, own hard negative) comparisons the positive wins;
/// - `pooled`: the same against every hard negative of the set (all queries' negatives pooled);
/// - `top1` / `mrr`: the positive's rank among the pooled hard negatives *and* the other queries' positives
///   (positives of the same Q&A or query text are left out);
/// - `margin`: the mean of cos(query, positive) − max cos(query, own hard negatives).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranking {
    pub pairwise: f64,
    pub pooled: f64,
    pub top1: f64,
    pub mrr: f64,
    pub margin: f64,
    /// (query, own hard negative) comparisons.
    pub comparisons: usize,
}

/// [`Ranking`] from an embedding function (texts → unit rows in input order).
pub fn ranking(examples: &[Example], embed: &mut dyn FnMut(&[&str]) -> Result<Vec<Vec<f32>>>) -> Result<Ranking> {
    fn id<'a>(t: &'a str, texts: &mut Vec<&'a str>, index: &mut HashMap<&'a str, usize>) -> usize {
        *index.entry(t).or_insert_with(|| {
            texts.push(t);
            texts.len() - 1
        })
    }
    let (mut texts, mut index) = (Vec::new(), HashMap::new());
    let mut q_ids = Vec::new();
    let mut p_ids = Vec::new();
    let mut n_ids: Vec<Vec<usize>> = Vec::new();
    for e in examples {
        q_ids.push(id(&e.query, &mut texts, &mut index));
        p_ids.push(id(&e.positive, &mut texts, &mut index));
        n_ids.push(e.negatives.iter().map(|n| id(n, &mut texts, &mut index)).collect());
    }
    let rows = embed(&texts)?;
    let cos = |a: usize, b: usize| rows[a].iter().zip(&rows[b]).map(|(x, y)| x * y).sum::<f32>();
    let pooled_negs: BTreeSet<usize> = n_ids.iter().flatten().copied().collect();
    let (mut own_won, mut own_total, mut pool_won, mut pool_total) = (0usize, 0usize, 0usize, 0usize);
    let (mut top1, mut mrr, mut margin, mut with_negs) = (0usize, 0f64, 0f64, 0usize);
    for (i, e) in examples.iter().enumerate() {
        let (q, p) = (q_ids[i], p_ids[i]);
        let pos = cos(q, p);
        own_total += n_ids[i].len();
        own_won += n_ids[i].iter().filter(|&&n| pos > cos(q, n)).count();
        if let Some(best_neg) = n_ids[i].iter().map(|&n| cos(q, n)).max_by(|a, b| a.total_cmp(b)) {
            margin += (pos - best_neg) as f64;
            with_negs += 1;
        }
        let negs: Vec<usize> = pooled_negs.iter().copied().filter(|&n| n != p).collect();
        pool_total += negs.len();
        pool_won += negs.iter().filter(|&&n| pos > cos(q, n)).count();
        let mut pool: BTreeSet<usize> = negs.into_iter().collect();
        for (j, other) in examples.iter().enumerate() {
            if j != i && other.qa_id != e.qa_id && other.query != e.query && p_ids[j] != p {
                pool.insert(p_ids[j]);
            }
        }
        let rank = pool.iter().filter(|&&d| cos(q, d) >= pos).count();
        top1 += (rank == 0) as usize;
        mrr += 1.0 / (rank + 1) as f64;
    }
    let frac = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let n = examples.len().max(1) as f64;
    Ok(Ranking {
        pairwise: frac(own_won, own_total),
        pooled: frac(pool_won, pool_total),
        top1: top1 as f64 / n,
        mrr: mrr / n,
        margin: if with_negs == 0 { 0.0 } else { margin / with_negs as f64 },
        comparisons: own_total,
    })
}

/// Rows of a `[n, D]` tensor as vectors.
pub fn tensor_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    let n = t.size()[0] as usize;
    let flat = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1])).map_err(Error::internal)?;
    let d = if n == 0 { 0 } else { flat.len() / n };
    Ok(flat.chunks(d.max(1)).map(|c| c.to_vec()).take(n).collect())
}

/// Hash of everything a checkpoint must agree with: the configuration and the examples.
fn checkpoint_key(cfg: &TrainConfig, train: &[Example], val: &[Example], model: &ColTrastModel) -> String {
    let mut h = blake3::Hasher::new();
    h.update(serde_json::to_string(cfg).unwrap_or_default().as_bytes());
    for (tag, set) in [("train", train), ("val", val)] {
        h.update(tag.as_bytes());
        for e in set {
            for s in std::iter::once(&e.qa_id).chain([&e.query, &e.positive]).chain(e.negatives.iter()) {
                h.update(&(s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    for (name, t) in model.named_parameters() {
        h.update(name.as_bytes());
        h.update(format!("{:?}", t.size()).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Trains `model` on `train` (validating on `val` after each epoch) with checkpoints in `work_dir`, and
/// leaves the best epoch's weights in it (the last epoch's when there is no validation data).
///
/// Each epoch re-seeds libtorch and the shuffle from `(seed, epoch)`; a checkpoint (weights, AdamW moments,
/// step, early-stopping state, log) is committed after each epoch. If `work_dir` holds a checkpoint for the
/// same configuration and data, training resumes after its epoch and ends with the same weights, bit for
/// bit on CPU, as an uninterrupted run.
pub fn train(
    cfg: &TrainConfig,
    model: &mut ColTrastModel,
    train: &[Example],
    val: &[Example],
    work_dir: &Path,
    hooks: &Hooks,
) -> Result<TrainOutcome> {
    if train.is_empty() {
        return Err(Error::Usage("no training pairs: the mine stage produced no pairs with split \"train\"".into()));
    }
    std::fs::create_dir_all(work_dir).map_err(|e| Error::io(work_dir, e))?;
    let mut mem = MemoryReport { rss_entry: memory::rss().now, ..Default::default() };
    let texts = Texts::new(model, &[train, val])?;
    mem.rss_texts = memory::rss().now.saturating_sub(mem.rss_entry);
    let act = memory::ActivationModel::new(model.encoder().config(), model.token_dim());
    check_memory(cfg, model, train, &texts, &act, &mut mem)?;
    let mut opt = AdamW::new(model.named_parameters(), cfg.weight_decay);
    mem.optimizer = opt.state_bytes();
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size) as u64;
    let run = Run {
        cfg,
        model,
        train,
        val,
        key: checkpoint_key(cfg, train, val, model),
        schedule: Schedule::new(cfg.learning_rate, cfg.warmup_ratio, steps_per_epoch * cfg.epochs),
        params: opt.parameters(),
        texts,
        act,
        work_dir,
        hooks,
    };
    let mut state = run.resume_or_start(&mut opt)?;
    let bar = if hooks.progress {
        let b = coltrast::progress::train_bar(steps_per_epoch * cfg.epochs);
        b.set_position(state.global_step);
        Some(b)
    } else {
        None
    };
    mem.rss_before_steps = memory::rss().now;
    mem.phase_peaks = memory::reset_peak();
    while state.epoch <= cfg.epochs && !state.stopped {
        run.epoch(&mut state, &mut opt, &mut mem, bar.as_ref())?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    run.finish(state, mem)
}

/// Records the size of the weights and the largest step's activations and MaxSim tensor over all epochs,
/// and refuses a run whose memory plan does not fit.
fn check_memory(
    cfg: &TrainConfig,
    model: &ColTrastModel,
    train: &[Example],
    texts: &Texts,
    act: &memory::ActivationModel,
    mem: &mut MemoryReport,
) -> Result<()> {
    mem.weights =
        model.named_parameters().iter().map(|(_, t)| t.numel() as u64 * t.kind().elt_size_in_bytes() as u64).sum();
    for e in 1..=cfg.epochs {
        for idx in rng::epoch_order(cfg.seed, e as usize, train.len()).chunks(cfg.batch_size) {
            let batch: Vec<&Example> = idx.iter().map(|&i| &train[i]).collect();
            note_shapes(mem, texts, &batch, cfg, act);
        }
    }
    let limits = memory::Limits {
        max_activation_mb: cfg.max_activation_mb,
        micro_batch_size: cfg.micro_batch_size,
        max_memory_mb: cfg.max_memory_mb,
    };
    let w = mem.weights as f64;
    // Gradients: a step's and, while micro-batches are summed, one more; copies: the checkpoint (weights and
    // moments on their way to disk), the best epoch's snapshot and the base_mix blend.
    let plan = memory::Plan {
        gradients: 2.0 * w,
        optimizer: 2.0 * w,
        copies: 5.0 * w,
        activations: mem.activation_estimate as f64,
    };
    memory::check_fits(&plan, memory::allowance(&limits, memory::available()), &limits)
}

/// Ends a memory phase: raises `peak` to the peak RSS since the last reset (and the growth to its rise over
/// the RSS the phase started from), then starts a fresh peak.
fn end_phase(peak: &mut u64, growth: Option<(&mut u64, u64)>) {
    let p = memory::rss().peak;
    *peak = (*peak).max(p);
    if let Some((g, start)) = growth {
        *g = (*g).max(p.saturating_sub(start));
    }
    memory::reset_peak();
}

/// What every phase of one [`train`] call reads.
struct Run<'a> {
    cfg: &'a TrainConfig,
    model: &'a ColTrastModel,
    train: &'a [Example],
    val: &'a [Example],
    /// What a checkpoint must agree with ([`checkpoint_key`]).
    key: String,
    schedule: Schedule,
    /// The trainable tensors, in AdamW's order.
    params: Vec<Tensor>,
    texts: Texts,
    act: memory::ActivationModel,
    work_dir: &'a Path,
    hooks: &'a Hooks<'a>,
}

/// Where a run stands: what a checkpoint carries, and the steps this process timed.
struct RunState {
    /// The next epoch to train (1-based).
    epoch: u64,
    global_step: u64,
    early: EarlyStopping,
    stopped: bool,
    log: Vec<LogRow>,
    /// The epoch a checkpoint let this run start after, if any.
    resumed_after: Option<u64>,
    steps_here: u64,
    step_time: f64,
}

impl Run<'_> {
    /// The state to start from: a matching checkpoint's (its weights and AdamW moments loaded into the model
    /// and `opt`), else a fresh one with the untrained model's validation pass logged.
    fn resume_or_start(&self, opt: &mut AdamW) -> Result<RunState> {
        let mut s = RunState {
            epoch: 1,
            global_step: 0,
            early: EarlyStopping::new(self.cfg.patience),
            stopped: false,
            log: Vec::new(),
            resumed_after: None,
            steps_here: 0,
            step_time: 0.0,
        };
        if let Some((ck, state_path)) = checkpoint::load(self.work_dir, &self.key) {
            let state = checkpoint::read_tensors(&state_path)?;
            let origin = state_path.display().to_string();
            self.model.load_parameters(&state, &origin)?;
            opt.load_state(&state, ck.global_step, &origin)?;
            tracing::info!(epoch = ck.epoch, step = ck.global_step, "resuming from checkpoint");
            eprintln!("train: resuming after epoch {} from {}", ck.epoch, state_path.display());
            s.epoch = ck.epoch + 1;
            s.global_step = ck.global_step;
            s.early = ck.early.clone();
            s.stopped = ck.stopped;
            s.log = ck.log.clone();
            s.resumed_after = Some(ck.epoch);
        } else if !self.val.is_empty() {
            let (t, c, l) = evaluate(self.model, &self.texts, self.val, self.cfg)?;
            tracing::info!(loss = t, contrastive = c, late = l, "validation before training");
            s.log.push(LogRow::validation(0, 0, (t, c, l)));
        }
        Ok(s)
    }

    /// One epoch: its steps in the epoch's shuffled order, validation, the checkpoint; then the next epoch.
    fn epoch(
        &self,
        s: &mut RunState,
        opt: &mut AdamW,
        mem: &mut MemoryReport,
        bar: Option<&ProgressBar>,
    ) -> Result<()> {
        let epoch = s.epoch;
        tch::manual_seed(rng::torch_seed(self.cfg.seed, epoch as usize));
        let order = rng::epoch_order(self.cfg.seed, epoch as usize, self.train.len());
        for idx in order.chunks(self.cfg.batch_size) {
            let row = self.step(s, opt, mem, idx)?;
            if let Some(bar) = bar {
                bar.set_prefix(format!("epoch {epoch}/{}", self.cfg.epochs));
                bar.set_message(format!(
                    "loss {:.4} (c {:.4}, li {:.4})",
                    row.loss, row.loss_contrastive, row.loss_late
                ));
                bar.set_position(s.global_step);
            }
            s.log.push(row);
        }
        end_phase(&mut mem.peak_steps, None);
        self.validate(s, mem)?;
        self.checkpoint(s, opt, mem)?;
        (self.hooks.fault_point)(&format!("epoch-{epoch}"));
        if s.stopped {
            tracing::info!(epoch, best = ?s.early.best_epoch, "early stopping");
        }
        s.epoch += 1;
        Ok(())
    }

    /// One update on the training examples `idx`: gradients, clipping, AdamW at the scheduled rate; returns
    /// its log row (an error once the loss is not finite).
    fn step(&self, s: &mut RunState, opt: &mut AdamW, mem: &mut MemoryReport, idx: &[usize]) -> Result<LogRow> {
        (self.hooks.fault_point)(&format!("step-{}", s.global_step + 1));
        let t0 = Instant::now();
        let batch: Vec<&Example> = idx.iter().map(|&i| &self.train[i]).collect();
        let lr = self.schedule.lr(s.global_step);
        let step = gradcache::step_gradients(
            self.model,
            &self.texts,
            &batch,
            self.cfg,
            &self.act,
            &self.params,
            s.global_step + 1,
        )?;
        let grad_norm = optim::global_norm(&step.grads);
        opt.apply(&step.grads, optim::clip_coef(grad_norm, self.cfg.max_grad_norm), lr);
        drop(step.grads);
        mem.max_passes = mem.max_passes.max(step.groups);
        s.global_step += 1;
        let (epoch, global_step) = (s.epoch, s.global_step);
        let (loss, loss_contrastive, loss_late) = step.losses;
        let row = LogRow {
            epoch,
            step: global_step,
            split: "train".into(),
            lr: Some(lr),
            loss,
            loss_contrastive,
            loss_late,
            grad_norm: Some(grad_norm),
        };
        s.step_time += t0.elapsed().as_secs_f64();
        s.steps_here += 1;
        if !row.loss.is_finite() {
            return Err(Error::internal(format!(
                "training diverged: loss {} at epoch {epoch}, step {global_step}; try a lower train.learning_rate",
                row.loss
            )));
        }
        tracing::info!(
            epoch,
            step = global_step,
            lr,
            loss = row.loss,
            contrastive = row.loss_contrastive,
            late = row.loss_late,
            grad_norm,
            "step"
        );
        Ok(row)
    }

    /// The validation pass after an epoch (when there is validation data): logs its losses and updates early
    /// stopping.
    fn validate(&self, s: &mut RunState, mem: &mut MemoryReport) -> Result<()> {
        let rss_val = memory::rss().now;
        if !self.val.is_empty() {
            let epoch = s.epoch;
            let (t, c, l) = evaluate(self.model, &self.texts, self.val, self.cfg)?;
            let improved = s.early.observe(epoch, t);
            tracing::info!(epoch, loss = t, contrastive = c, late = l, improved, "validation");
            s.log.push(LogRow::validation(epoch, s.global_step, (t, c, l)));
            s.stopped = s.early.should_stop() && epoch < self.cfg.epochs;
            end_phase(&mut mem.peak_validation, Some((&mut mem.growth_validation, rss_val)));
        }
        Ok(())
    }

    /// Writes and commits the epoch's checkpoint: weights, AdamW moments, step, early stopping, log.
    fn checkpoint(&self, s: &RunState, opt: &AdamW, mem: &mut MemoryReport) -> Result<()> {
        let rss_ck = memory::rss().now;
        let mut state = self.model.named_parameters();
        state.extend(opt.state());
        let name = checkpoint::state_file_name(s.epoch);
        let hash = checkpoint::write_tensors(&self.work_dir.join(&name), &state)?;
        let mut ck = checkpoint::Checkpoint::new(&self.key, s.epoch, s.global_step, name, hash);
        ck.early = s.early.clone();
        ck.stopped = s.stopped;
        ck.log = s.log.clone();
        checkpoint::commit(self.work_dir, &ck)?;
        end_phase(&mut mem.peak_checkpoint, Some((&mut mem.growth_checkpoint, rss_ck)));
        Ok(())
    }

    /// Leaves the best epoch's weights in the model and sums the run up.
    fn finish(&self, s: RunState, mem: MemoryReport) -> Result<TrainOutcome> {
        let epochs_run = s.log.iter().filter(|r| r.split == "train").map(|r| r.epoch).max().unwrap_or(0);
        let best_epoch = s.early.best_epoch.unwrap_or(epochs_run);
        // The model holds the last committed epoch's weights; the best epoch's replace them (its state file is
        // kept by every commit).
        let last = s.epoch - 1;
        if best_epoch != last {
            let path = self.work_dir.join(checkpoint::state_file_name(best_epoch));
            let state = checkpoint::read_tensors(&path)?;
            self.model.load_parameters(&state, &path.display().to_string())?;
        }
        Ok(TrainOutcome {
            best_val_loss: s.early.best_loss,
            best_epoch,
            epochs_run,
            stopped_early: s.stopped,
            steps: s.global_step,
            resumed_after: s.resumed_after,
            steps_per_s: if s.step_time > 0.0 { s.steps_here as f64 / s.step_time } else { 0.0 },
            log: s.log,
            memory: mem,
        })
    }
}

/// Records the largest forward pass (estimate) and the largest MaxSim tensor of a batch.
fn note_shapes(
    mem: &mut MemoryReport,
    texts: &Texts,
    batch: &[&Example],
    cfg: &TrainConfig,
    act: &memory::ActivationModel,
) {
    let plan = BatchPlan::new(batch);
    let queries: Vec<&str> = batch.iter().map(|e| e.query.as_str()).collect();
    let docs: Vec<&str> = plan.docs.iter().map(|s| s.as_str()).collect();
    let len = |t: &&str| texts.get(t).map_or(0, |x| x.len());
    let (lq, ld) = (queries.iter().map(len).max().unwrap_or(0), docs.iter().map(len).max().unwrap_or(0));
    mem.maxsim = mem.maxsim.max((plan.late_query.len() * lq * ld * 4) as u64);
    let largest = match gradcache::grouping(texts, &queries, &docs, cfg, act) {
        None => act.bytes(queries.len(), lq) + act.bytes(docs.len(), ld),
        Some((gq, gd)) => {
            let group = |items: &[&str], g: &memory::Grouping| {
                g.groups.iter().map(|grp| act.bytes(grp.len(), len(&items[grp[0]]))).fold(0.0, f64::max)
            };
            group(&queries, &gq).max(group(&docs, &gd))
        }
    };
    mem.activation_estimate = mem.activation_estimate.max(largest as u64);
}
