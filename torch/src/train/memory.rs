//! Training memory: what the process holds (peak RSS by phase, read from `/proc/self/status`), what a forward
//! pass with autograd keeps for its backward pass (an estimate from the model's shapes), how a batch's texts
//! are grouped so that each pass fits `train.max_activation_mb`, and the check that the whole run fits the
//! machine before it starts.
//!
//! The activation estimate counts the float32 tensors that libtorch saves per encoder layer for `n` texts
//! padded to `len` tokens: a linear term per token (`ACT_PER_TOKEN_HIDDEN` floats per hidden unit and
//! `ACT_PER_TOKEN_INTERMEDIATE` per feed-forward unit: the inputs of the seven matmuls, the LayerNorm and GELU
//! inputs, the dropout masks) and, where attention is computed explicitly, a quadratic term per head
//! (`ACT_PER_ATTENTION_SCORE` floats per score: the softmax output, its dropout mask and the dropped
//! probabilities). The constants come from counting those tensors, not from a fit; `make bench` (section
//! `train`) prints the estimate next to the measured activations: on all-MiniLM-L6-v2 and ai_faq_dev it was 5%
//! under at batch 8 (3.6 vs 3.8 GiB) and 22% over at batch 64 (18.4 vs 15.1 GiB), unbounded.

use std::path::Path;

use coltrast::error::{Error, Result};

use crate::encoder::ModelConfig;

/// Saved float32 values per token and hidden unit, per layer.
pub const ACT_PER_TOKEN_HIDDEN: f64 = 16.0;
/// Saved float32 values per token and feed-forward unit, per layer.
pub const ACT_PER_TOKEN_INTERMEDIATE: f64 = 3.0;
/// Saved float32 values per attention score (one head, one query token, one key token), per layer.
pub const ACT_PER_ATTENTION_SCORE: f64 = 3.0;

pub const MIB: f64 = 1024.0 * 1024.0;

/// The shapes that decide activation memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActivationModel {
    pub layers: f64,
    pub hidden: f64,
    pub intermediate: f64,
    pub heads: f64,
    /// Width of the token head's output (saved with its normalisation).
    pub token_dim: f64,
}

impl ActivationModel {
    pub fn new(config: &ModelConfig, token_dim: usize) -> Self {
        ActivationModel {
            layers: config.num_hidden_layers as f64,
            hidden: config.hidden_size as f64,
            intermediate: config.intermediate_size as f64,
            heads: config.num_attention_heads as f64,
            token_dim: token_dim as f64,
        }
    }

    /// Estimated bytes that one training forward pass over `n` texts padded to `len` tokens keeps until its
    /// backward pass.
    pub fn bytes(&self, n: usize, len: usize) -> f64 {
        let (n, len) = (n as f64, len as f64);
        let per_layer = n
            * len
            * (ACT_PER_TOKEN_HIDDEN * self.hidden
                + ACT_PER_TOKEN_INTERMEDIATE * self.intermediate
                + ACT_PER_ATTENTION_SCORE * self.heads * len);
        // Embeddings (sum, LayerNorm, dropout) and the two heads.
        let outside = n * len * (4.0 * self.hidden + 3.0 * self.token_dim);
        4.0 * (self.layers * per_layer + outside)
    }
}

/// How one batch's texts (queries or documents) are encoded: index groups into the text list, each group
/// one forward pass, longest texts first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub groups: Vec<Vec<usize>>,
}

/// Groups texts of the given token lengths for forward passes. With `fixed > 0`, groups of `fixed` texts in
/// length order; otherwise each group takes texts, longest first, while its estimate (all padded to the
/// group's longest) stays within `budget` bytes. A group always holds at least one text. `budget <= 0` puts
/// everything in one group.
pub fn group_texts(lengths: &[usize], model: &ActivationModel, budget: f64, fixed: usize) -> Grouping {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    // Longest first; ties keep input order (deterministic).
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    if fixed > 0 {
        return Grouping { groups: order.chunks(fixed).map(|c| c.to_vec()).collect() };
    }
    if budget <= 0.0 {
        return Grouping { groups: if order.is_empty() { vec![] } else { vec![order] } };
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // The group's padded length is its first (longest) text's.
        let len = current.first().map(|&f| lengths[f]).unwrap_or(lengths[i]);
        if !current.is_empty() && model.bytes(current.len() + 1, len) > budget {
            groups.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    Grouping { groups }
}

/// One process's memory as Linux reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rss {
    /// Resident set size now, bytes.
    pub now: u64,
    /// Peak resident set size since the start or the last [`reset_peak`], bytes.
    pub peak: u64,
}

/// The current and peak RSS of this process (zeros where `/proc` is unavailable).
pub fn rss() -> Rss {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    };
    Rss { now: field("VmRSS:"), peak: field("VmHWM:") }
}

/// Resets the peak RSS to the current RSS (Linux `clear_refs` value 5), so that the next [`rss`] reports
/// the peak of what follows. Returns false where that is not possible (the peak then stays cumulative).
pub fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Memory this process may still take, in bytes: `MemAvailable` of `/proc/meminfo`, lowered to the cgroup's
/// remaining allowance when a cgroup (v2 or v1) sets a limit. `None` when neither can be read.
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let read_u64 = |p: &str| std::fs::read_to_string(Path::new(p)).ok().and_then(|t| t.trim().parse::<u64>().ok());
    let cgroup = match (read_u64("/sys/fs/cgroup/memory.max"), read_u64("/sys/fs/cgroup/memory.current")) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => match (
            read_u64("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            read_u64("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
        ) {
            // v1 reports "no limit" as a huge number.
            (Some(max), Some(cur)) if max < (1u64 << 60) => Some(max.saturating_sub(cur)),
            _ => None,
        },
    };
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What the run will hold on top of what the process holds when training starts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Gradients of one step (one float per parameter, plus a second while micro-batch gradients are summed).
    pub gradients: f64,
    /// AdamW's two moments.
    pub optimizer: f64,
    /// Copies of the weights: the best epoch's snapshot, the base weights for `train.base_mix`, and the
    /// checkpoint written after each epoch (weights and moments, copied to the CPU and serialised).
    pub copies: f64,
    /// The largest forward pass of any batch (estimate).
    pub activations: f64,
}

impl Plan {
    pub fn total(&self) -> f64 {
        self.gradients + self.optimizer + self.copies + self.activations
    }
}

/// The limits a run is checked against: `train.max_activation_mb`, `train.micro_batch_size` and
/// `train.max_memory_mb` (MiB; 0 = none of that kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub max_activation_mb: u64,
    pub micro_batch_size: usize,
    pub max_memory_mb: u64,
}

/// What the run may still take, bytes: the machine's [`available`] memory, capped by `max_memory_mb`.
pub fn allowance(limits: &Limits, machine: Option<u64>) -> Option<u64> {
    let cap = (limits.max_memory_mb > 0).then(|| limits.max_memory_mb * 1024 * 1024);
    match (machine, cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Fails with one line when `plan` does not fit in `available` bytes, naming what to lower.
pub fn check_fits(plan: &Plan, available: Option<u64>, s: &Limits) -> Result<()> {
    let Some(avail) = available else { return Ok(()) };
    let need = plan.total();
    if need <= avail as f64 {
        return Ok(());
    }
    let mb = |x: f64| (x / MIB).ceil() as u64;
    let what = if s.max_activation_mb == 0 && s.micro_batch_size == 0 {
        "set train.max_activation_mb (e.g. 512) to encode each batch in micro-batches".to_string()
    } else if s.micro_batch_size > 0 {
        format!("lower train.micro_batch_size (now {})", s.micro_batch_size)
    } else {
        format!("lower train.max_activation_mb (now {})", s.max_activation_mb)
    };
    let source = if s.max_memory_mb > 0 && s.max_memory_mb * 1024 * 1024 <= avail {
        format!("train.max_memory_mb allows {}", s.max_memory_mb)
    } else {
        format!("only {} MiB are available", avail / (1024 * 1024))
    };
    Err(Error::Usage(format!(
        "train: needs about {} MiB more memory (activations {} MiB, optimizer state and gradients {} MiB, weight \
         copies {} MiB) but {source}: {what}, or lower train.batch_size",
        mb(need),
        mb(plan.activations),
        mb(plan.gradients + plan.optimizer),
        mb(plan.copies),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minilm() -> ActivationModel {
        ActivationModel { layers: 6.0, hidden: 384.0, intermediate: 1536.0, heads: 12.0, token_dim: 128.0 }
    }

    #[test]
    fn estimate_grows_linearly_in_texts_and_faster_in_length() {
        let m = minilm();
        assert!((m.bytes(8, 256) - 8.0 * m.bytes(1, 256)).abs() < 1.0);
        assert!(m.bytes(1, 256) > 2.0 * m.bytes(1, 128));
        assert_eq!(m.bytes(0, 256), 0.0);
    }

    #[test]
    fn groups_respect_the_budget_and_cover_every_text_once() {
        let m = minilm();
        let lengths = [256, 12, 256, 80, 200, 256, 30, 256, 256, 256];
        let budget = m.bytes(3, 256) + 1.0;
        let g = group_texts(&lengths, &m, budget, 0);
        let mut all: Vec<usize> = g.groups.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..lengths.len()).collect::<Vec<_>>());
        for group in &g.groups {
            let len = lengths[group[0]];
            assert!(group.iter().all(|&i| lengths[i] <= len), "longest first");
            assert!(group.len() == 1 || m.bytes(group.len(), len) <= budget, "{group:?}");
        }
        // Six texts of 256 tokens, three per group; the short ones share the last groups.
        assert_eq!(g.groups[0].len(), 3);
        assert_eq!(g.groups[1].len(), 3);
        assert!(g.groups.len() < lengths.len());
        // No budget: one group. A fixed size: groups of that size.
        assert_eq!(group_texts(&lengths, &m, 0.0, 0).groups.len(), 1);
        assert_eq!(group_texts(&lengths, &m, budget, 4).groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [4, 4, 2]);
        // A text larger than the budget still gets a group of its own.
        assert_eq!(group_texts(&[256, 256], &m, 1.0, 0).groups, [vec![0], vec![1]]);
    }

    #[test]
    fn check_fits_names_what_to_lower() {
        let s = Limits { max_activation_mb: 512, micro_batch_size: 0, max_memory_mb: 0 };
        let plan = Plan { gradients: 1e8, optimizer: 2e8, copies: 1e8, activations: 5e8 };
        assert!(check_fits(&plan, Some(2_000_000_000), &s).is_ok());
        assert!(check_fits(&plan, None, &s).is_ok());
        let err = check_fits(&plan, Some(400 * 1024 * 1024), &s).unwrap_err().to_string();
        assert!(err.contains("train.max_activation_mb (now 512)") && err.contains("400 MiB are available"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let unbounded = Limits { max_activation_mb: 0, ..s };
        let err = check_fits(&plan, Some(1), &unbounded).unwrap_err().to_string();
        assert!(err.contains("set train.max_activation_mb"), "{err}");
        let fixed = Limits { micro_batch_size: 16, ..s };
        let err = check_fits(&plan, Some(1), &fixed).unwrap_err().to_string();
        assert!(err.contains("lower train.micro_batch_size (now 16)"), "{err}");
        // The setting caps what the machine offers, and the message says which limit bit.
        let capped = Limits { max_memory_mb: 300, ..s };
        assert_eq!(allowance(&capped, Some(1 << 40)), Some(300 * 1024 * 1024));
        assert_eq!(allowance(&capped, Some(1 << 20)), Some(1 << 20));
        assert_eq!(allowance(&s, None), None);
        let err = check_fits(&plan, allowance(&capped, Some(1 << 40)), &capped).unwrap_err().to_string();
        assert!(err.contains("train.max_memory_mb allows 300"), "{err}");
    }

    #[test]
    fn rss_reads_this_process() {
        let r = rss();
        if r.now == 0 {
            eprintln!("skipped: /proc/self/status is not readable here");
            return;
        }
        assert!(r.peak >= r.now);
        assert!(available().is_some());
    }
}
