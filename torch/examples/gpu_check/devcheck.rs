//! CPU against CUDA: the comparisons `scripts/gpu_check.sh` reports (through this example, `gpu_check`).
//!
//! What: per-epoch losses of two train artifacts ([`epoch_losses`], [`compare_losses`]) and the cosine between
//! two sets of embeddings of the same texts ([`CosineStats`]).
//!
//! Tolerances, and why they differ:
//! - epoch 0 (the validation pass of the untrained model: forward only, no dropout): the two devices may differ
//!   only by float rounding, so `|cpu - cuda| <= 1e-3 * max(1, |cpu|)` ([`ROUNDING_TOL`]);
//! - later epochs: libtorch draws dropout masks from a CPU generator on the CPU and from a CUDA generator on the
//!   GPU, so the same seed gives different masks and the runs follow different paths. A relative difference up
//!   to [`TRAJECTORY_TOL`] (15%) per epoch passes; a CUDA path that is broken (a loss that does not fall, NaN)
//!   does not.
//!

use coltrast::error::{Error, Result};

/// Epoch 0 (no training yet): rounding only.
pub const ROUNDING_TOL: f64 = 1e-3;
/// Epochs after training started: different dropout masks per device.
pub const TRAJECTORY_TOL: f64 = 0.15;

pub use coltrast::artifacts::train::{epoch_losses, EpochLoss};

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct LossComparison {
    pub split: String,
    pub epoch: i64,
    pub cpu: f64,
    pub cuda: f64,
    /// `|cpu - cuda| / max(1, |cpu|)` at epoch 0, `|cpu - cuda| / |cpu|` after.
    pub rel_diff: f64,
    pub tolerance: f64,
    pub ok: bool,
}

/// Row by row (same split and epoch) comparison; an error when the runs do not have the same rows.
pub fn compare_losses(cpu: &[EpochLoss], cuda: &[EpochLoss]) -> Result<Vec<LossComparison>> {
    let key = |l: &EpochLoss| (l.split.clone(), l.epoch);
    let a: Vec<_> = cpu.iter().map(key).collect();
    let b: Vec<_> = cuda.iter().map(key).collect();
    if a != b {
        return Err(Error::Usage(format!(
            "the CPU and CUDA runs logged different epochs ({a:?} vs {b:?}); run both with train.patience = 0"
        )));
    }
    Ok(cpu
        .iter()
        .zip(cuda)
        .map(|(c, g)| {
            let (scale, tolerance) =
                if c.epoch == 0 { (c.loss.abs().max(1.0), ROUNDING_TOL) } else { (c.loss.abs(), TRAJECTORY_TOL) };
            let rel_diff = (c.loss - g.loss).abs() / scale;
            let ok = g.loss.is_finite() && rel_diff <= tolerance;
            LossComparison {
                split: c.split.clone(),
                epoch: c.epoch,
                cpu: c.loss,
                cuda: g.loss,
                rel_diff,
                tolerance,
                ok,
            }
        })
        .collect())
}

/// Cosine between row i of two embedding sets (rows L2-normalised: the dot product).
#[derive(Debug, Clone, PartialEq)]
pub struct CosineStats {
    pub n: usize,
    pub mean: f64,
    pub min: f64,
}

impl CosineStats {
    pub fn of(a: &coltrast::embed::Embeddings, b: &coltrast::embed::Embeddings) -> Result<CosineStats> {
        if a.len() != b.len() || a.dim != b.dim {
            return Err(Error::internal(format!("{}x{} vs {}x{} embeddings", a.len(), a.dim, b.len(), b.dim)));
        }
        let cos: Vec<f64> = a.rows().zip(b.rows()).map(|(x, y)| coltrast::embed::cosine(x, y) as f64).collect();
        let n = cos.len();
        let mean = if n == 0 { f64::NAN } else { cos.iter().sum::<f64>() / n as f64 };
        let min = cos.iter().copied().fold(f64::INFINITY, f64::min);
        Ok(CosineStats { n, mean, min })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(split: &str, epoch: i64, loss: f64) -> EpochLoss {
        EpochLoss { split: split.into(), epoch, loss }
    }

    #[test]
    fn epoch_0_allows_rounding_later_epochs_a_trajectory() {
        let cpu = [l("val", 0, 2.0), l("train", 1, 1.0), l("val", 1, 1.5)];
        let close = [l("val", 0, 2.0015), l("train", 1, 1.1), l("val", 1, 1.3)];
        assert!(compare_losses(&cpu, &close).unwrap().iter().all(|c| c.ok));
        // an untrained model that differs by more than rounding is a bug
        let off0 = [l("val", 0, 2.01), l("train", 1, 1.0), l("val", 1, 1.5)];
        let r = compare_losses(&cpu, &off0).unwrap();
        assert!(!r[0].ok && r[1].ok && r[2].ok);
        // a loss that does not fall, or NaN
        let stuck = [l("val", 0, 2.0), l("train", 1, 2.0), l("val", 1, f64::NAN)];
        let r = compare_losses(&cpu, &stuck).unwrap();
        assert!(r[0].ok && !r[1].ok && !r[2].ok);
        // different epochs (early stopping on one side) cannot be compared
        let e = compare_losses(&cpu, &cpu[..2]).unwrap_err().to_string();
        assert!(e.contains("patience"), "{e}");
    }

    #[test]
    fn cosine_stats() {
        use coltrast::embed::Embeddings;
        let a = Embeddings { dim: 2, data: vec![1.0, 0.0, 0.0, 1.0] };
        let b = Embeddings {
            dim: 2,
            data: vec![1.0, 0.0, std::f32::consts::FRAC_1_SQRT_2, std::f32::consts::FRAC_1_SQRT_2],
        };
        let s = CosineStats::of(&a, &b).unwrap();
        assert_eq!(s.n, 2);
        assert!((s.min - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((s.mean - (1.0 + std::f64::consts::FRAC_1_SQRT_2) / 2.0).abs() < 1e-6);
        assert!(CosineStats::of(&a, &Embeddings { dim: 2, data: vec![1.0, 0.0] }).is_err());
    }
}
