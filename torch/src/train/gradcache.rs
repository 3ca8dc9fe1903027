//! A training step with bounded activation memory: GradCache (Gao, Zhang, Han & Callan 2021, "Scaling Deep
//! Contrastive Learning Batch Size under Memory Limited Setup").
//!
//! The ColTrast loss couples every query of a batch with every document of it (in-batch negatives), so a
//! batch cannot be cut into smaller batches whose gradients are added up. GradCache cuts the *encoder* work
//! instead:
//!
//! 1. Encode the batch's queries and its distinct documents in groups ([`memory::group_texts`]: longest first,
//!    each group within `train.max_activation_mb`), without autograd, keeping only the representations
//!    (pooled vectors, token vectors, masks).
//! 2. Compute the loss on those representations as leaf tensors and its gradient with respect to them. The
//!    representations are small, so this costs little memory.
//! 3. Encode each group again with autograd and push its slice of the representation gradient back through
//!    it alone. By the chain rule, `∂L/∂θ = Σ_g (∂L/∂r_g) · (∂r_g/∂θ)`: the summed parameter gradients are
//!    the whole batch's, and the loss is the whole batch's.
//!
//! Dropout in each group is seeded from `(train.seed, step, group)` before both of its passes, so passes 1
//! and 3 draw the same masks. Peak activation memory is about one budget's instead of the batch's; the price
//! is the second forward pass of the recomputed groups (a forward pass is about 40% of a step on CPU). The
//! smallest groups (the queries, and the shortest documents) keep their graph from pass 1 while their
//! estimates add up to at most the budget, and are not encoded again. A batch whose texts fit in the budget
//! takes the plain step: one pass with autograd, exactly the arithmetic of an unbounded run.

use tch::{Kind, Tensor};

use super::memory::{group_texts, ActivationModel, Grouping, MIB};
use super::model::Encoded;
use super::{batch_loss, plan_loss, rng, BatchLoss, BatchPlan, ColTrastModel, Example, Texts, TrainConfig};
use coltrast::error::{Error, Result};

/// What one step computed: the three losses (total, contrastive, late), one gradient per parameter (in the
/// order given; undefined where the loss does not reach a parameter) and how many forward passes encoded the
/// batch (2 for a plain step: queries and documents).
pub struct StepGradients {
    pub losses: (f64, f64, f64),
    pub grads: Vec<Tensor>,
    pub groups: usize,
    /// Groups encoded a second time (the others kept their graph from the first pass).
    pub recomputed: usize,
}

/// How the queries and the documents of a batch are encoded: `None` for one pass each (the plain step).
pub fn grouping(
    texts: &Texts,
    queries: &[&str],
    docs: &[&str],
    cfg: &TrainConfig,
    act: &ActivationModel,
) -> Option<(Grouping, Grouping)> {
    let lengths = |v: &[&str]| -> Vec<usize> { v.iter().map(|t| texts.get(t).map_or(0, |x| x.len())).collect() };
    let (lq, ld) = (lengths(queries), lengths(docs));
    let longest = |l: &[usize]| l.iter().copied().max().unwrap_or(0);
    let budget = cfg.max_activation_mb as f64 * MIB;
    let fixed = cfg.micro_batch_size;
    let fits = if fixed > 0 {
        queries.len() <= fixed && docs.len() <= fixed
    } else {
        budget <= 0.0 || act.bytes(queries.len(), longest(&lq)) + act.bytes(docs.len(), longest(&ld)) <= budget
    };
    if fits {
        None
    } else {
        Some((group_texts(&lq, act, budget, fixed), group_texts(&ld, act, budget, fixed)))
    }
}

/// libtorch seeds of the groups of one step: queries' groups first, then documents'.
fn seeds(cfg: &TrainConfig, step: u64, n: usize) -> Vec<i64> {
    (0..n).map(|k| rng::micro_seed(cfg.seed, step, k)).collect()
}

/// Encodes one group of `items` (under whatever grad mode is current), seeding libtorch first when `seed` is
/// given.
fn encode_group(
    model: &ColTrastModel,
    texts: &Texts,
    items: &[&str],
    group: &[usize],
    train: bool,
    seed: Option<i64>,
) -> Result<Encoded> {
    let group_texts: Vec<&str> = group.iter().map(|&i| items[i]).collect();
    if let Some(s) = seed {
        tch::manual_seed(s);
    }
    Ok(model.encode(&texts.batch(&group_texts, model.device())?, train))
}

/// The groups' representations as one batch in input order, token vectors padded with zeros (mask 0) to the
/// longest text.
fn assemble(parts: &[Encoded], grouping: &Grouping, n: usize, device: tch::Device) -> Encoded {
    let len = parts.iter().map(|e| e.mask.size()[1]).max().unwrap_or(0);
    let pad = |t: &Tensor, dims: usize| -> Tensor {
        let missing = len - t.size()[1];
        if missing == 0 {
            t.shallow_clone()
        } else if dims == 3 {
            t.constant_pad_nd([0, 0, 0, missing])
        } else {
            t.constant_pad_nd([0, missing])
        }
    };
    let pooled = Tensor::cat(&parts.iter().map(|e| e.pooled.shallow_clone()).collect::<Vec<_>>(), 0);
    let tokens = Tensor::cat(&parts.iter().map(|e| pad(&e.tokens, 3)).collect::<Vec<_>>(), 0);
    let mask = Tensor::cat(&parts.iter().map(|e| pad(&e.mask, 2)).collect::<Vec<_>>(), 0);
    // Rows are in group order; put them back in input order.
    let mut position = vec![0i64; n];
    for (p, &i) in grouping.groups.iter().flatten().enumerate() {
        position[i] = p as i64;
    }
    let back = Tensor::from_slice(&position).to_device(device);
    Encoded {
        pooled: pooled.index_select(0, &back),
        tokens: tokens.index_select(0, &back),
        mask: mask.index_select(0, &back),
    }
}

/// Encodes `items` group by group (under whatever grad mode the caller set), seeding libtorch before each
/// group when `seeds` is given, and returns the representations in input order, token vectors padded with
/// zeros (mask 0) to the longest text.
pub fn encode_groups(
    model: &ColTrastModel,
    texts: &Texts,
    items: &[&str],
    grouping: &Grouping,
    train: bool,
    seeds: Option<&[i64]>,
) -> Result<Encoded> {
    let parts = grouping
        .groups
        .iter()
        .enumerate()
        .map(|(k, g)| encode_group(model, texts, items, g, train, seeds.map(|s| s[k])))
        .collect::<Result<Vec<_>>>()?;
    Ok(assemble(&parts, grouping, items.len(), model.device()))
}

/// Which groups keep their autograd graph from the first pass instead of being encoded a second time: the
/// smallest, as long as the kept estimates add up to at most `budget` bytes (none without a budget).
fn kept_groups(estimates: &[f64], budget: f64) -> Vec<bool> {
    let mut keep = vec![false; estimates.len()];
    if budget <= 0.0 {
        return keep;
    }
    let mut order: Vec<usize> = (0..estimates.len()).collect();
    order.sort_by(|&a, &b| estimates[a].total_cmp(&estimates[b]));
    let mut used = 0.0;
    for i in order {
        if used + estimates[i] <= budget {
            keep[i] = true;
            used += estimates[i];
        }
    }
    keep
}

/// The loss of a batch without autograd or dropout (validation), encoding in groups when the batch does not
/// fit the budget (the same values as one pass, up to float rounding).
pub fn eval_loss(
    model: &ColTrastModel,
    texts: &Texts,
    batch: &[&Example],
    cfg: &TrainConfig,
    act: &ActivationModel,
) -> Result<BatchLoss> {
    let plan = BatchPlan::new(batch);
    let queries: Vec<&str> = batch.iter().map(|e| e.query.as_str()).collect();
    let docs: Vec<&str> = plan.docs.iter().map(|s| s.as_str()).collect();
    match grouping(texts, &queries, &docs, cfg, act) {
        None => batch_loss(model, texts, batch, cfg, false),
        Some((gq, gd)) => {
            let q = encode_groups(model, texts, &queries, &gq, false, None)?;
            let d = encode_groups(model, texts, &docs, &gd, false, None)?;
            Ok(plan_loss(model, &q, &d, &plan, cfg))
        }
    }
}

fn add_into(acc: &mut [Tensor], grads: Vec<Tensor>) {
    let _guard = tch::no_grad_guard();
    for (a, g) in acc.iter_mut().zip(grads) {
        if !g.defined() {
            continue;
        }
        if a.defined() {
            let _ = a.g_add_(&g);
        } else {
            *a = g;
        }
    }
}

/// One training step's losses and parameter gradients (dropout on), `step` being the update's 1-based
/// number. See the module docs for when the batch is encoded in groups.
pub fn step_gradients(
    model: &ColTrastModel,
    texts: &Texts,
    batch: &[&Example],
    cfg: &TrainConfig,
    act: &ActivationModel,
    params: &[Tensor],
    step: u64,
) -> Result<StepGradients> {
    let plan = BatchPlan::new(batch);
    let queries: Vec<&str> = batch.iter().map(|e| e.query.as_str()).collect();
    let docs: Vec<&str> = plan.docs.iter().map(|s| s.as_str()).collect();
    let values = |b: &BatchLoss| (b.total.double_value(&[]), b.contrastive.double_value(&[]), b.late.double_value(&[]));
    let param_refs: Vec<&Tensor> = params.iter().collect();
    let Some((gq, gd)) = grouping(texts, &queries, &docs, cfg, act) else {
        let b = batch_loss(model, texts, batch, cfg, true)?;
        let grads = Tensor::run_backward(&[&b.total], &param_refs, false, false);
        return Ok(StepGradients { losses: values(&b), grads, groups: 2, recomputed: 0 });
    };
    let n_groups = gq.groups.len() + gd.groups.len();
    let seeds = seeds(cfg, step, n_groups);
    let (seeds_q, seeds_d) = seeds.split_at(gq.groups.len());
    let len_of = |t: &str| texts.get(t).map_or(0, |x| x.len());
    let estimates: Vec<f64> = gq
        .groups
        .iter()
        .map(|g| act.bytes(g.len(), len_of(queries[g[0]])))
        .chain(gd.groups.iter().map(|g| act.bytes(g.len(), len_of(docs[g[0]]))))
        .collect();
    let keep = kept_groups(&estimates, cfg.max_activation_mb as f64 * MIB);
    let (keep_q, keep_d) = keep.split_at(gq.groups.len());

    // 1. Representations: without autograd, except for the groups whose graph is kept for step 3.
    let first_pass = |items: &[&str],
                      grouping: &Grouping,
                      seeds: &[i64],
                      keep: &[bool]|
     -> Result<(Encoded, Vec<Option<Encoded>>)> {
        let mut parts = Vec::with_capacity(grouping.groups.len());
        let mut kept = Vec::with_capacity(grouping.groups.len());
        for (k, g) in grouping.groups.iter().enumerate() {
            let e = if keep[k] {
                encode_group(model, texts, items, g, true, Some(seeds[k]))?
            } else {
                let _guard = tch::no_grad_guard();
                encode_group(model, texts, items, g, true, Some(seeds[k]))?
            };
            let detached =
                Encoded { pooled: e.pooled.detach(), tokens: e.tokens.detach(), mask: e.mask.shallow_clone() };
            kept.push(keep[k].then_some(e));
            parts.push(detached);
        }
        Ok((assemble(&parts, grouping, items.len(), model.device()), kept))
    };
    let (q, kept_q) = first_pass(&queries, &gq, seeds_q, keep_q)?;
    let (d, kept_d) = first_pass(&docs, &gd, seeds_d, keep_d)?;
    // 2. The loss on them as leaves, and its gradient with respect to them.
    let leaf = |t: &Tensor| t.detach().set_requires_grad(true);
    let q = Encoded { pooled: leaf(&q.pooled), tokens: leaf(&q.tokens), mask: q.mask };
    let d = Encoded { pooled: leaf(&d.pooled), tokens: leaf(&d.tokens), mask: d.mask };
    let b = plan_loss(model, &q, &d, &plan, cfg);
    let rep_grads = Tensor::run_backward(&[&b.total], &[&q.pooled, &q.tokens, &d.pooled, &d.tokens], false, false);
    let losses = values(&b);
    drop(b);

    // 3. Each group with autograd (its kept graph, or encoded again), back-propagating its slice of the cached
    // gradient. Kept graphs go first, so that their memory is released before any group is encoded again.
    let mut acc: Vec<Tensor> = (0..params.len()).map(|_| Tensor::new()).collect();
    let device = model.device();
    let mut work: Vec<(&[&str], &Vec<usize>, i64, &Tensor, &Tensor, Option<Encoded>)> = Vec::new();
    for (items, grouping, seeds, kept, g_pooled, g_tokens) in [
        (&queries[..], &gq, seeds_q, kept_q, &rep_grads[0], &rep_grads[1]),
        (&docs[..], &gd, seeds_d, kept_d, &rep_grads[2], &rep_grads[3]),
    ] {
        for ((group, &seed), e) in grouping.groups.iter().zip(seeds).zip(kept) {
            work.push((items, group, seed, g_pooled, g_tokens, e));
        }
    }
    work.sort_by_key(|w| w.5.is_none());
    for (items, group, seed, g_pooled, g_tokens, kept) in work {
        let rows = Tensor::from_slice(&group.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device);
        let e = match kept {
            Some(e) => e,
            None => encode_group(model, texts, items, group, true, Some(seed))?,
        };
        let mut surrogate: Option<Tensor> = None;
        let mut add = |term: Tensor| {
            surrogate = Some(match surrogate.take() {
                Some(s) => s + term,
                None => term,
            })
        };
        if g_pooled.defined() {
            add((&e.pooled * g_pooled.index_select(0, &rows)).sum(Kind::Float));
        }
        if g_tokens.defined() {
            let len = e.tokens.size()[1];
            add((&e.tokens * g_tokens.index_select(0, &rows).narrow(1, 0, len)).sum(Kind::Float));
        }
        let Some(surrogate) = surrogate else { continue };
        add_into(&mut acc, Tensor::run_backward(&[&surrogate], &param_refs, false, false));
    }
    if acc.iter().all(|g| !g.defined()) {
        return Err(Error::internal("the loss reached no parameter"));
    }
    Ok(StepGradients { losses, grads: acc, groups: n_groups, recomputed: keep.iter().filter(|k| !**k).count() })
}
