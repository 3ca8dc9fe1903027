//! # export: the trained model (and the base model) as ONNX, built in Rust
//!
//! **What.** Builds the ONNX graph (opset 17) of the fine-tuned model from its weights with [`crate::onnx`] —
//! no Python, no tracing — and of the base model, which eval compares against. Then runs each exported graph
//! in ONNX Runtime on fixed sentences and compares it with libtorch (its reference vectors come through
//! [`crate::backend`], so this stage runs in coltrast-torch): the stage fails if the max absolute difference of
//! the sentence embeddings (and, for the fine-tuned model, the token embeddings) exceeds 1e-4.
//!
//! **Inputs.** `train/model/` (a sentence-transformers dir with the ColTrast heads); the base model.
//!
//! **Outputs.** `coltrast/` and `base/`, each with `model.onnx` (inputs `input_ids`, `attention_mask`,
//! `token_type_ids`: int64 [batch, seq], dynamic; outputs `sentence_embedding` [batch, D] pooled, projected
//! and L2-normalised, `token_embeddings` [batch, seq, T] token head, L2-normalised per token; for the base
//! model, which has no token head, the normalised last hidden state), the tokenizer files and
//! `onnx_model.json` (inputs, outputs, dims, max_seq_length, opset). `parity.json`: the parity reports.
//!
//! **Params.** `export.model` (`"auto"`, `"coltrast"` or `"base"`), `export.guard_margin` and `export.guard_noise`:
//! which of the two
//! the index stage serves ([`crate::guard`]; not part of this stage's fingerprint). `export.quantize` (`"none"` or `"int8"`): int8
//! exports have dynamically quantised encoder MatMuls, so they cannot match libtorch to 1e-4; their parity
//! check is instead a minimum cosine to libtorch of [`INT8_MIN_COSINE`] for every sentence embedding and
//! [`INT8_MIN_TOKEN_COSINE`] for every token embedding.
//!
//! **Example.** `coltrast run export && python -c "import onnxruntime as o; o.InferenceSession('…/coltrast/model.onnx')"`

use std::path::Path;

use crate::artifacts::export::{BASE, FINETUNED, INT8_MIN_COSINE, INT8_MIN_TOKEN_COSINE, MODEL_FILE};
use crate::artifacts::{train, StageId};
use crate::embed::{cosine, max_abs_diff, OrtEncoder, ParityReport, PARITY_SENTENCES, PARITY_TOLERANCE};
use crate::engine::{ExternalInput, Stage, StageContext};
use crate::error::{Error, Result};
use crate::onnx::{export_sentence_model_with, ExportOptions, Quantize};
use crate::settings::{ModelDevice, Settings};

pub struct Export;

impl Stage<Settings> for Export {
    fn id(&self) -> StageId {
        StageId::Export
    }
    fn upstream(&self) -> &'static [StageId] {
        &[StageId::Train]
    }
    fn code_version(&self) -> u32 {
        // 4: onnx_model.json names the model type and its pad id
        // 5: int8 activations quantised with one scale per token, not per tensor
        5
    }
    fn settings(&self, s: &Settings) -> Result<toml::Value> {
        // export.model and guard_margin only pick what is served (the index stage); both models are always exported.
        Settings::key_value(&ExportKey { quantize: s.export.quantize })
    }
    fn external_inputs(&self, s: &Settings) -> Result<Vec<ExternalInput>> {
        Ok(vec![ExternalInput { name: "base_model".into(), path: s.base_model_dir() }])
    }
    fn available(&self) -> bool {
        crate::backend::available()
    }
    fn run(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        let s = ctx.config;
        let trained = ctx.upstream_dir(StageId::Train)?.join(train::MODEL_DIR);
        let out_ft = ctx.output(FINETUNED);
        let out_base = ctx.output(BASE);
        let opts = ExportOptions { quantize: s.export.quantize, ..Default::default() };
        let info_ft = export_sentence_model_with(&trained, &out_ft.join(MODEL_FILE), &opts)?;
        export_sentence_model_with(&s.base_model_dir(), &out_base.join(MODEL_FILE), &opts)?;
        ctx.record_stat("embedding_dim", info_ft.embedding_dim as u64);
        ctx.record_stat("token_dim", info_ft.token_dim as u64);
        ctx.record_stat("onnx_bytes", info_ft.onnx_bytes);

        // Parity: ort against libtorch on fixed sentences, on the CPU whatever model.device says (a GPU's
        // rounding is not what this gate measures, and the artifact must not depend on the device).
        let reference = crate::backend::backend()?.export_reference(&trained, &s.base_model_dir(), PARITY_SENTENCES)?;
        let ft = OrtEncoder::from_settings_on(&out_ft, s, ModelDevice::Cpu)?;
        let pooled = ft.parity(PARITY_SENTENCES, &reference.sentence)?;
        let tokens = token_parity(&ft, &reference.tokens)?;
        let base = OrtEncoder::from_settings_on(&out_base, s, ModelDevice::Cpu)?
            .parity(PARITY_SENTENCES, &reference.base_sentence)?;
        write_parity(&ctx.output("parity.json"), s.export.quantize, &pooled, tokens, &base)?;
        ctx.record_stat("parity_max_abs_diff_coltrast", pooled.max_abs_diff as f64);
        ctx.record_stat("parity_max_abs_diff_tokens", tokens.max_abs_diff as f64);
        ctx.record_stat("parity_max_abs_diff_base", base.max_abs_diff as f64);
        ctx.record_stat("parity_min_cosine_coltrast", pooled.min_cosine as f64);
        ctx.record_stat("parity_min_cosine_tokens", tokens.min_cosine as f64);
        ctx.record_stat("parity_min_cosine_base", base.min_cosine as f64);
        match s.export.quantize {
            Quantize::None => {
                pooled.check(PARITY_TOLERANCE)?;
                base.check(PARITY_TOLERANCE)?;
                if tokens.max_abs_diff > PARITY_TOLERANCE {
                    return Err(Error::Internal(format!(
                        "ONNX parity failed: token embeddings differ from libtorch by {:.3e} > {PARITY_TOLERANCE:.0e}",
                        tokens.max_abs_diff
                    )));
                }
            }
            Quantize::Int8 => {
                pooled.check_cosine(INT8_MIN_COSINE)?;
                base.check_cosine(INT8_MIN_COSINE)?;
                if tokens.min_cosine < INT8_MIN_TOKEN_COSINE {
                    return Err(Error::Internal(format!(
                        "int8 ONNX parity failed: a token embedding has cosine {:.5} < {INT8_MIN_TOKEN_COSINE} to libtorch",
                        tokens.min_cosine
                    )));
                }
            }
        }
        tracing::info!(
            quantize = s.export.quantize.as_str(),
            pooled = pooled.max_abs_diff,
            pooled_min_cos = pooled.min_cosine,
            tokens = tokens.max_abs_diff,
            tokens_min_cos = tokens.min_cosine,
            base = base.max_abs_diff,
            "ONNX parity"
        );
        Ok(())
    }
}

/// How far ort's token embeddings are from libtorch's (real tokens only).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct TokenParity {
    max_abs_diff: f32,
    min_cosine: f32,
}

/// Compare ort's token embeddings of [`PARITY_SENTENCES`] with libtorch's (`reference`: per text, its real
/// tokens' rows back to back).
fn token_parity(ort: &OrtEncoder, reference: &[Vec<f32>]) -> Result<TokenParity> {
    let got = ort.embed_tokens(PARITY_SENTENCES)?;
    if got.len() != reference.len() {
        return Err(Error::internal(format!("parity: {} token references for {} texts", reference.len(), got.len())));
    }
    let mut worst = TokenParity { max_abs_diff: 0.0, min_cosine: f32::INFINITY };
    for (g, want) in got.iter().zip(reference) {
        worst.max_abs_diff = worst.max_abs_diff.max(max_abs_diff(want, &g.data));
        for (r, row) in want.chunks(g.dim.max(1)).enumerate() {
            worst.min_cosine = worst.min_cosine.min(if r < g.len() { cosine(row, g.row(r)) } else { 0.0 });
        }
    }
    Ok(worst)
}

fn write_parity(
    path: &Path,
    quantize: Quantize,
    pooled: &ParityReport,
    tokens: TokenParity,
    base: &ParityReport,
) -> Result<()> {
    let v = serde_json::json!({
        "quantize": quantize,
        "tolerance": PARITY_TOLERANCE,
        "int8_min_cosine": INT8_MIN_COSINE,
        "int8_min_token_cosine": INT8_MIN_TOKEN_COSINE,
        "coltrast_sentence": pooled,
        "coltrast_tokens_max_abs_diff": tokens.max_abs_diff,
        "coltrast_tokens_min_cosine": tokens.min_cosine,
        "base_sentence": base,
    });
    let bytes = serde_json::to_vec_pretty(&v).map_err(Error::internal)?;
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}
/// The export stage's cache key. `export.model` and the guard's settings only pick what is served (the index
/// stage); both models are always exported.
#[derive(Debug, serde::Serialize)]
pub struct ExportKey {
    pub quantize: crate::settings::Quantize,
}
