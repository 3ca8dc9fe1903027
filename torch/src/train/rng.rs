//! A small seeded generator (SplitMix64) for everything training draws outside libtorch: the order of the
//! training pairs in each epoch, the token head's initial weights and the per-epoch libtorch seeds. Being a
//! pure function of the seed makes resumption exact: an epoch's randomness is re-derived from
//! `(seed, epoch)`, never carried over from the previous epoch.

/// SplitMix64 (Steele, Lea & Flood 2014): fast, platform-independent, good enough for shuffles and inits.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A generator for one purpose (`stream`) of one seed, so streams never overlap by accident.
    pub fn derive(seed: u64, stream: u64) -> Self {
        let mut g = SplitMix64(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        g.next_u64();
        g
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// Streams (purposes) of the training seed.
pub const STREAM_SHUFFLE: u64 = 1;
pub const STREAM_TORCH: u64 = 2;
pub const STREAM_TOKEN_HEAD: u64 = 3;
pub const STREAM_MICRO: u64 = 4;

/// The order of `n` training pairs in `epoch` (1-based).
pub fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    SplitMix64::derive(seed.wrapping_add(epoch as u64), STREAM_SHUFFLE).shuffle(&mut order);
    order
}

/// libtorch's seed (dropout) for `epoch`.
pub fn torch_seed(seed: u64, epoch: usize) -> i64 {
    (SplitMix64::derive(seed.wrapping_add(epoch as u64), STREAM_TORCH).next_u64() >> 1) as i64
}

/// libtorch's seed (dropout) for forward pass `pass` of update `step` when a batch is encoded in groups
/// (see `gradcache`): the same in the pass without autograd and the pass with it.
pub fn micro_seed(seed: u64, step: u64, pass: usize) -> i64 {
    let mut g = SplitMix64::derive(seed.wrapping_add(step.wrapping_mul(0x9E37_79B9)), STREAM_MICRO);
    for _ in 0..pass {
        g.next_u64();
    }
    (g.next_u64() >> 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_and_depend_on_seed_and_epoch() {
        let a = epoch_order(42, 1, 50);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(42, 1, 50));
        assert_ne!(a, epoch_order(42, 2, 50));
        assert_ne!(a, epoch_order(43, 1, 50));
        assert_ne!(torch_seed(42, 1), torch_seed(42, 2));
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut g = SplitMix64::derive(7, 0);
        let xs: Vec<f64> = (0..20000).map(|_| g.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
