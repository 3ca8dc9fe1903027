//! AdamW, the learning-rate schedule, gradient clipping and early stopping, written out so that their whole
//! state can be checkpointed and restored exactly (tch's optimisers keep theirs inside C++).

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use coltrast::error::{Error, Result};

/// AdamW as `torch.optim.AdamW` (decoupled weight decay, bias-corrected moments, no amsgrad):
/// `p ← p·(1 − lr·wd)`, `m ← β1·m + (1 − β1)·g`, `v ← β2·v + (1 − β2)·g²`,
/// `p ← p − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)`.
///
/// Gradients are taken with [`AdamW::gradients`] (autograd's `grad`, nothing accumulated in `.grad`, so
/// nothing to zero), the global norm is clipped by scaling inside the update, and on the CPU the whole update
/// is one fused pass over each parameter (read p, g, m, v; write p, m, v) instead of a chain of tensor ops.
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

/// The factor `torch.nn.utils.clip_grad_norm_` scales gradients by: `max_norm / (norm + 1e-6)` when the
/// norm exceeds `max_norm > 0`, else 1.
pub fn clip_coef(norm: f64, max_norm: f64) -> f64 {
    if max_norm > 0.0 && norm > max_norm {
        max_norm / (norm + 1e-6)
    } else {
        1.0
    }
}

/// Global L2 norm of gradients (undefined ones skipped).
pub fn global_norm(grads: &[Tensor]) -> f64 {
    let _guard = tch::no_grad_guard();
    let norms: Vec<Tensor> =
        grads.iter().filter(|g| g.defined()).map(|g| g.to_kind(Kind::Float).norm().reshape([1])).collect();
    if norms.is_empty() {
        return 0.0;
    }
    Tensor::cat(&norms, 0).norm().double_value(&[])
}

/// Hyper-parameters of one update.
#[derive(Clone, Copy)]
struct Update {
    decay: f32,
    beta1: f32,
    beta2: f32,
    /// `1 − β1`, `1 − β2`, computed in f64 (in f32 `1 − 0.999` loses four digits).
    one_minus_beta1: f32,
    one_minus_beta2: f32,
    scale: f32,
    step_size: f32,
    bc2_sqrt: f32,
    eps: f32,
}

/// The fused CPU update of one parameter (contiguous float32 slices of equal length).
fn fused_cpu(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], u: Update) {
    use rayon::prelude::*;
    const CHUNK: usize = 1 << 14;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            for i in 0..p.len() {
                let gi = g[i] * u.scale;
                let mi = u.beta1 * m[i] + u.one_minus_beta1 * gi;
                let vi = u.beta2 * v[i] + u.one_minus_beta2 * gi * gi;
                m[i] = mi;
                v[i] = vi;
                p[i] = p[i] * u.decay - u.step_size * mi / (vi.sqrt() / u.bc2_sqrt + u.eps);
            }
        });
}

/// A mutable float32 view of a contiguous CPU tensor.
///
/// Safety: the caller must hold no other view of the same memory while the slice lives.
unsafe fn cpu_slice<'a>(t: &Tensor) -> Option<&'a mut [f32]> {
    if !t.defined() || t.device() != tch::Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    let n = t.numel();
    let ptr = t.data_ptr() as *mut f32;
    if n == 0 || ptr.is_null() {
        return None;
    }
    Some(std::slice::from_raw_parts_mut(ptr, n))
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

    /// The parameters, in the order [`AdamW::apply`] takes their gradients (shallow copies).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.params.iter().map(|s| s.param.shallow_clone()).collect()
    }

    /// Bytes of the two moments.
    pub fn state_bytes(&self) -> u64 {
        self.params.iter().map(|s| 2 * s.param.numel() as u64 * s.param.kind().elt_size_in_bytes() as u64).sum()
    }

    /// Gradients of `loss` for every parameter, in order (undefined for parameters it does not use),
    /// without touching `.grad`.
    pub fn gradients(&self, loss: &Tensor) -> Vec<Tensor> {
        let params: Vec<&Tensor> = self.params.iter().map(|s| &s.param).collect();
        Tensor::run_backward(&[loss], &params, false, false)
    }

    /// Backward pass, clipping to `max_norm` (0 = none) and one update with learning rate `lr`. Returns the
    /// gradients' global norm before clipping.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64, max_norm: f64) -> f64 {
        let grads = self.gradients(loss);
        let norm = global_norm(&grads);
        self.apply(&grads, clip_coef(norm, max_norm), lr);
        norm
    }

    /// One update from `grads` (one per parameter, in order) scaled by `scale`.
    pub fn apply(&mut self, grads: &[Tensor], scale: f64, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        for (s, g) in self.params.iter_mut().zip(grads) {
            if !g.defined() {
                continue;
            }
            let decay = if s.decay { 1.0 - lr * self.weight_decay } else { 1.0 };
            let g = if g.is_contiguous() { g.shallow_clone() } else { g.contiguous() };
            let u = Update {
                decay: decay as f32,
                beta1: self.beta1 as f32,
                beta2: self.beta2 as f32,
                one_minus_beta1: (1.0 - self.beta1) as f32,
                one_minus_beta2: (1.0 - self.beta2) as f32,
                scale: scale as f32,
                step_size: (lr / bc1) as f32,
                bc2_sqrt: bc2_sqrt as f32,
                eps: self.eps as f32,
            };
            // SAFETY: p, m and v are distinct tensors owned by this optimizer (m, v) or the model (p), and g
            // is a fresh gradient; nothing else reads or writes them during the update.
            let views = unsafe { (cpu_slice(&s.param), cpu_slice(&g), cpu_slice(&s.m), cpu_slice(&s.v)) };
            match views {
                (Some(p), Some(g), Some(m), Some(v)) if p.len() == g.len() => fused_cpu(p, g, m, v, u),
                _ => {
                    let g = if scale != 1.0 { &g * scale } else { g };
                    if decay != 1.0 {
                        let _ = s.param.g_mul_scalar_(decay);
                    }
                    let _ = s.m.lerp_(&g, 1.0 - self.beta1);
                    let _ = s.v.g_mul_scalar_(self.beta2);
                    let _ = s.v.addcmul_(&(&g * (1.0 - self.beta2)), &g);
                    let denom = (s.v.sqrt() / bc2_sqrt).g_add_scalar_(self.eps);
                    let _ = s.param.addcdiv_(&(&s.m * (-lr / bc1)), &denom);
                }
            }
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
    fn adamw_matches_torch_formula() {
        // Parameters x with loss sum(x²) (g = 2x); lr 0.1, wd 0.01: two steps by hand, on the fused CPU path
        // (float32) and the tensor-op path (float64).
        for kind in [Kind::Float, Kind::Double] {
            let init = [1.0f64, -0.5, 2.0];
            let p = Tensor::from_slice(&init).to_kind(kind).set_requires_grad(true);
            let mut opt = AdamW::new(vec![("w".into(), p.shallow_clone())], 0.01);
            let (b1, b2, eps, lr, wd) = (0.9, 0.999, 1e-8, 0.1, 0.01);
            let mut x = init;
            let (mut m, mut v) = ([0.0f64; 3], [0.0f64; 3]);
            for t in 1..=2 {
                let norm = opt.backward_step(&(&p * &p).sum(kind), lr, 0.0);
                let g: Vec<f64> = x.iter().map(|xi| 2.0 * xi).collect();
                let want_norm = g.iter().map(|gi| gi * gi).sum::<f64>().sqrt();
                assert!((norm - want_norm).abs() < 1e-4);
                for i in 0..3 {
                    x[i] *= 1.0 - lr * wd;
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    let mh = m[i] / (1.0 - b1.powi(t));
                    let vh = (v[i] / (1.0 - b2.powi(t))).sqrt();
                    x[i] -= lr * mh / (vh + eps);
                    let got = p.double_value(&[i as i64]);
                    assert!((got - x[i]).abs() < 1e-6, "{kind:?} step {t}: {got} vs {}", x[i]);
                }
            }
            assert!(!p.grad().defined(), "gradients are not accumulated into .grad");
        }
        // Biases and LayerNorms are not decayed.
        assert!(decays("encoder.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("encoder.embeddings.LayerNorm.weight"));
        assert!(!decays("dense.linear.bias"));
    }

    #[test]
    fn clipping_scales_the_gradient_to_max_norm() {
        assert_eq!(clip_coef(0.5, 1.0), 1.0);
        assert_eq!(clip_coef(5.0, 0.0), 1.0);
        assert!((clip_coef(10.0, 1.0) - 0.1).abs() < 1e-6);
        // A clipped step equals a step on the gradient scaled by hand.
        let loss = |p: &Tensor| (p * Tensor::from_slice(&[6.0f32, 8.0])).sum(Kind::Float); // g = (6, 8), norm 10
        let a = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        let mut oa = AdamW::new(vec![("w".into(), a.shallow_clone())], 0.0);
        let n = oa.backward_step(&loss(&a), 0.1, 1.0);
        assert!((n - 10.0).abs() < 1e-5);
        let b = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        let mut ob = AdamW::new(vec![("w".into(), b.shallow_clone())], 0.0);
        ob.apply(&[Tensor::from_slice(&[0.6f32, 0.8])], 1.0, 0.1);
        assert!(a.allclose(&b, 1e-6, 1e-7, false), "{a} vs {b}");
    }
}
