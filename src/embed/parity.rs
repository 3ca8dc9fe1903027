//! Parity between the exported ONNX model and a reference (tch, sentence-transformers): max abs diff and
//! cosine per sentence.
//!
//! What: the export stage embeds [`PARITY_SENTENCES`] with tch and with the exported model and fails when
//! the max abs diff exceeds [`PARITY_TOLERANCE`] (1e-4).
//!
//! Inputs: texts, the ONNX embeddings (or an [`OrtEncoder`] to make them) and one reference vector per text.
//! Outputs: a [`ParityReport`] (per sentence and overall max abs diff and cosine; `Serialize`, for reports).
//!
//! Example:
//! ```
//! use coltrast::embed::{Embeddings, ParityReport, PARITY_TOLERANCE};
//! let onnx = Embeddings { dim: 2, data: vec![0.6, 0.8] };
//! let tch = vec![vec![0.6, 0.80001]];
//! let r = ParityReport::compare(&["hello"], &onnx, &tch)?;
//! r.check(PARITY_TOLERANCE)?;
//! # Ok::<(), coltrast::Error>(())
//! ```

use serde::Serialize;

use super::encoder::{Embeddings, OrtEncoder};
use crate::error::{Error, Result};

/// The export stage fails when ONNX and tch differ by more than this (max abs diff over all values).
pub const PARITY_TOLERANCE: f32 = 1e-4;

/// Fixed sentences for parity checks: short and long, punctuation, Unicode, code, Markdown.
pub const PARITY_SENTENCES: &[&str] = &[
    "What AI model is used for medical diagnosis?",
    "ResNet-50 with transfer learning, pre-trained on ImageNet, classifies chest X-rays.",
    "The training set holds 500,000 customer reviews from Amazon and Yelp.",
    "## Data Source\n- **Dataset**: ChestX-ray14 dataset from NIH",
    "Déjà vu: naïve café owners ship ünïcödé 🚀 emojis and CJK 漢字 too.",
    "a",
    "def train(model, data):\n    for batch in data:\n        loss = model(batch)",
    "Hard negatives are the most similar chunks from other projects.",
];

/// Largest `|a[i] - b[i]|`; infinity when the lengths differ, NaN-safe (a NaN counts as infinity).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() {
            f32::INFINITY
        } else {
            m.max(d)
        }
    })
}

/// Cosine similarity (0 when either vector is zero or the lengths differ).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        ab += *x as f64 * *y as f64;
        aa += *x as f64 * *x as f64;
        bb += *y as f64 * *y as f64;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        (ab / (aa.sqrt() * bb.sqrt())) as f32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParityCase {
    pub text: String,
    pub max_abs_diff: f32,
    pub cosine: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParityReport {
    pub cases: Vec<ParityCase>,
    pub max_abs_diff: f32,
    pub min_cosine: f32,
}

impl ParityReport {
    /// Compare embeddings row by row with reference vectors.
    pub fn compare(texts: &[&str], got: &Embeddings, reference: &[Vec<f32>]) -> Result<ParityReport> {
        if texts.len() != reference.len() || got.len() != reference.len() {
            return Err(Error::Internal(format!(
                "parity: {} texts, {} embeddings, {} reference vectors",
                texts.len(),
                got.len(),
                reference.len()
            )));
        }
        let cases: Vec<ParityCase> = texts
            .iter()
            .zip(reference)
            .enumerate()
            .map(|(i, (t, r))| ParityCase {
                text: t.to_string(),
                max_abs_diff: max_abs_diff(got.row(i), r),
                cosine: cosine(got.row(i), r),
            })
            .collect();
        let max_abs_diff = cases.iter().map(|c| c.max_abs_diff).fold(0f32, f32::max);
        let min_cosine = cases.iter().map(|c| c.cosine).fold(f32::INFINITY, f32::min);
        Ok(ParityReport { cases, max_abs_diff, min_cosine })
    }

    pub fn passes(&self, tolerance: f32) -> bool {
        self.max_abs_diff <= tolerance
    }

    /// `Ok` when every sentence's cosine is at least `min` (the check for quantised exports), else an error
    /// naming the worst sentence.
    pub fn check_cosine(&self, min: f32) -> Result<()> {
        if self.min_cosine >= min {
            return Ok(());
        }
        let worst = self.cases.iter().min_by(|a, b| a.cosine.total_cmp(&b.cosine));
        Err(Error::Internal(format!(
            "ONNX parity failed: min cosine {:.6} < {min} (max abs diff {:.3e}); worst sentence: {:?}",
            self.min_cosine,
            self.max_abs_diff,
            worst.map(|c| c.text.as_str()).unwrap_or("")
        )))
    }

    /// `Ok` within `tolerance`, else an error naming the worst sentence.
    pub fn check(&self, tolerance: f32) -> Result<()> {
        if self.passes(tolerance) {
            return Ok(());
        }
        let worst = self.cases.iter().max_by(|a, b| a.max_abs_diff.total_cmp(&b.max_abs_diff));
        Err(Error::Internal(format!(
            "ONNX parity failed: max abs diff {:.3e} > {tolerance:.0e} (min cosine {:.6}); worst sentence: {:?}",
            self.max_abs_diff,
            self.min_cosine,
            worst.map(|c| c.text.as_str()).unwrap_or("")
        )))
    }
}

impl OrtEncoder {
    /// Embed `texts` with the ONNX model and compare with `reference` (one vector per text).
    pub fn parity(&self, texts: &[&str], reference: &[Vec<f32>]) -> Result<ParityReport> {
        let got = self.embed(texts)?;
        ParityReport::compare(texts, &got, reference)
    }
}
