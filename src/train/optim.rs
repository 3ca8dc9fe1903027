//! AdamW, the learning-rate schedule, gradient clipping and early stopping, written out so that their whole
//! state can be checkpointed and restored exactly (tch's optimisers keep theirs inside C++).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// AdamW as `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments, no amsgrad):
/// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
/// `p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)`.
pub struct AdamW {
    params: Vec<Slot>,
    /// Updates done so far (t).
    pub step: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// Weight decay goes to weight matrices only: not to biases or LayerNorm parameters (as BERT's and
/// sentence-transformers' training recipes).
pub fn decays(name: &str) -> bool {
    !(name.ends_with("bias") || name.contains("LayerNorm"))
}

impl AdamW {
    /// β1 0.9, β2 0.999, ε 1e-8 (PyTorch's defaults).
    pub fn new(named: Vec<(String, Tensor)>, weight_decay: f64) -> AdamW {
        let params = named
            .into_iter()
            .map(|(name, param)| {
                let m = param.zeros_like().detach();
                let v = param.zeros_like().detach();
                Slot { decay: decays(&name), name, param, m, v }
            })
            .collect();
        AdamW { params, step: 0, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay }
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for s in &mut self.params {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Global L2 norm of all gradients (before clipping); when `max_norm > 0` and the norm exceeds it, every
    /// gradient is scaled by `max_norm / (norm + 1e-6)`, as `torch.nn.utils.clip_grad_norm_`.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let _guard = tch::no_grad_guard();
        let norms: Vec<Tensor> = self
            .params
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .map(|g| g.to_kind(Kind::Float).norm().reshape([1]))
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        let total = Tensor::cat(&norms, 0).norm().double_value(&[]);
        if max_norm > 0.0 && total > max_norm {
            let coef = max_norm / (total + 1e-6);
            for s in &self.params {
                let mut g = s.param.grad();
                if g.defined() {
                    let _ = g.g_mul_scalar_(coef);
                }
            }
        }
        total
    }

    /// One update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        for s in &mut self.params {
            let g = s.param.grad();
            if !g.defined() {
                continue;
            }
            if s.decay && self.weight_decay > 0.0 {
                let _ = s.param.g_mul_scalar_(1.0 - lr * self.weight_decay);
            }
            let _ = s.m.lerp_(&g, 1.0 - self.beta1);
            let _ = s.v.g_mul_scalar_(self.beta2);
            let _ = s.v.addcmul_(&(&g * (1.0 - self.beta2)), &g);
            let denom = (s.v.sqrt() / bc2_sqrt).g_add_scalar_(self.eps);
            let update = (&s.m / denom) * (-lr / bc1);
            let _ = s.param.g_add_(&update);
        }
    }

    /// The moments, named `adam_m.<param>` / `adam_v.<param>`, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 2);
        for s in &self.params {
            out.push((format!("adam_m.{}", s.name), s.m.shallow_clone()));
            out.push((format!("adam_v.{}", s.name), s.v.shallow_clone()));
        }
        out
    }

    /// Restores the moments saved by [`AdamW::state`] and the step count.
    pub fn load_state(&mut self, named: &[(String, Tensor)], step: u64, origin: &str) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let find = |n: &str| {
            named
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, t)| t)
                .ok_or_else(|| Error::internal(format!("{origin}: optimizer tensor {n} missing")))
        };
        for s in &mut self.params {
            let m = find(&format!("adam_m.{}", s.name))?;
            let v = find(&format!("adam_v.{}", s.name))?;
            s.m.f_copy_(&m.to_device(s.m.device())).map_err(Error::internal)?;
            s.v.f_copy_(&v.to_device(s.v.device())).map_err(Error::internal)?;
        }
        self.step = step;
        Ok(())
    }
}

/// Linear warm-up then linear decay. `warmup = ceil(ratio × total)`. Update `k` (0-based) uses
/// `base · (k + 1) / warmup` while `k < warmup`, then `base · (total − k) / (total − warmup)`: no update runs
/// with a learning rate of 0, the peak is reached at the end of warm-up and the last update uses
/// `base / (total − warmup)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub base: f64,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    pub fn new(base: f64, ratio: f64, total: u64) -> Schedule {
        let warmup = ((ratio * total as f64).ceil() as u64).min(total);
        Schedule { base, warmup, total }
    }

    pub fn lr(&self, k: u64) -> f64 {
        if k < self.warmup {
            self.base * (k + 1) as f64 / self.warmup as f64
        } else if self.total > self.warmup {
            self.base * (self.total.saturating_sub(k)) as f64 / (self.total - self.warmup) as f64
        } else {
            self.base
        }
    }
}

/// Early stopping on the validation loss: the best epoch so far and how many epochs in a row did not beat
/// it. `patience = 0` never stops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub patience: u64,
    pub best_epoch: Option<u64>,
    #[serde(with = "super::opt_f64_bits")]
    pub best_loss: Option<f64>,
    pub bad_epochs: u64,
}

impl EarlyStopping {
    pub fn new(patience: u64) -> Self {
        EarlyStopping { patience, best_epoch: None, best_loss: None, bad_epochs: 0 }
    }

    /// Records epoch `epoch`'s validation loss; returns true when it is the new best (strictly lower).
    pub fn observe(&mut self, epoch: u64, loss: f64) -> bool {
        let better = match self.best_loss {
            None => loss.is_finite(),
            Some(b) => loss < b,
        };
        if better {
            self.best_epoch = Some(epoch);
            self.best_loss = Some(loss);
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        better
    }

    /// True once `patience` epochs in a row did not improve.
    pub fn should_stop(&self) -> bool {
        self.patience > 0 && self.bad_epochs >= self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_linearly() {
        let s = Schedule::new(1.0, 0.1, 20);
        assert_eq!(s.warmup, 2);
        let lrs: Vec<f64> = (0..20).map(|k| s.lr(k)).collect();
        assert_eq!(lrs[0], 0.5);
        assert_eq!(lrs[1], 1.0);
        assert_eq!(lrs[2], 1.0);
        assert!((lrs[19] - 1.0 / 18.0).abs() < 1e-12);
        assert!(lrs[2..].windows(2).all(|w| w[1] < w[0]));
        assert_eq!(Schedule::new(1.0, 0.0, 5).lr(0), 1.0);
        assert_eq!(Schedule::new(1.0, 1.0, 4).lr(3), 1.0);
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch_and_stops_after_patience() {
        let mut e = EarlyStopping::new(2);
        let losses = [1.0, 0.8, 0.7, 0.75, 0.72, 0.6];
        let mut stopped_at = None;
        for (i, l) in losses.iter().enumerate() {
            e.observe(i as u64 + 1, *l);
            if e.should_stop() {
                stopped_at = Some(i + 1);
                break;
            }
        }
        assert_eq!(stopped_at, Some(5));
        assert_eq!(e.best_epoch, Some(3));
        assert_eq!(e.best_loss, Some(0.7));
        let mut never = EarlyStopping::new(0);
        for (i, l) in losses.iter().enumerate() {
            never.observe(i as u64 + 1, *l);
            assert!(!never.should_stop());
        }
        assert_eq!(never.best_epoch, Some(6));
    }

    #[test]
    fn adamw_matches_torch_formula_on_one_scalar() {
        // One parameter p = 1 with loss p² (g = 2p); lr 0.1, wd 0.01: check two steps by hand.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], 0.01);
        let (b1, b2, eps, lr, wd) = (0.9, 0.999, 1e-8, 0.1, 0.01);
        let (mut x, mut m, mut v) = (1.0f64, 0.0f64, 0.0f64);
        for t in 1..=2 {
            opt.zero_grad();
            (&p * &p).sum(Kind::Double).backward();
            opt.step(lr);
            let g = 2.0 * x;
            x *= 1.0 - lr * wd;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mh = m / (1.0 - b1.powi(t));
            let vh = (v / (1.0 - b2.powi(t))).sqrt();
            x -= lr * mh / (vh + eps);
            assert!((p.double_value(&[0]) - x).abs() < 1e-9, "step {t}: {} vs {x}", p.double_value(&[0]));
        }
        // Biases and LayerNorms are not decayed.
        assert!(decays("encoder.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("encoder.embeddings.LayerNorm.weight"));
        assert!(!decays("dense.linear.bias"));
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let p = Tensor::from_slice(&[3.0f32, 4.0]).set_requires_grad(true);
        let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], 0.0);
        (&p * &p).sum(Kind::Float).backward(); // g = (6, 8), norm 10
        let n = opt.clip_grad_norm(1.0);
        assert!((n - 10.0).abs() < 1e-5);
        let g = Vec::<f32>::try_from(p.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
    }
}
