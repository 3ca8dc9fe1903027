//! The export stage's artifact: one folder per exported model (`finetuned/`, `base/`), each with `model.onnx`,
//! `onnx_model.json`, the tokenizer and the parity report; and [`ExportedModel`], an exported model opened for
//! embedding through its caches.

use crate::artifacts::StageId;
use crate::embed::cache::{EmbeddingCache, TokenCache};
use crate::embed::OrtEncoder;
use crate::engine::StageContext;
use crate::error::{Error, Result};
pub use crate::guard::{BASE, FINETUNED};
use crate::settings::Settings;
pub const MODEL_FILE: &str = "model.onnx";
/// int8 exports: the least cosine between an ONNX sentence embedding and libtorch's.
pub const INT8_MIN_COSINE: f32 = 0.97;
/// int8 exports: the least cosine between an ONNX token embedding and libtorch's.
pub const INT8_MIN_TOKEN_COSINE: f32 = 0.90;

/// One exported ONNX model, ready to embed through its (model hash, text hash) caches.
pub struct ExportedModel {
    /// `export/<fingerprint>/<name>/`.
    pub dir: std::path::PathBuf,
    /// The caches' key: `onnx-<blake3 of model.onnx>`.
    pub key: String,
    pub info: crate::onnx::OnnxModelInfo,
    pub encoder: OrtEncoder,
    pub embeddings: EmbeddingCache,
    pub tokens: TokenCache,
}

impl ExportedModel {
    /// Open `export/<name>/` (name: [`FINETUNED`] or [`BASE`]); its cache key is the blake3 of
    /// its model.onnx as recorded in the export manifest.
    pub fn open(ctx: &StageContext<'_, Settings>, name: &str) -> Result<ExportedModel> {
        let dir = ctx.upstream_dir(StageId::Export)?.join(name);
        let rel = format!("{name}/{}", MODEL_FILE);
        let hash = ctx
            .upstream_manifest(StageId::Export)?
            .output(&rel)
            .map(|o| o.blake3.clone())
            .ok_or_else(|| Error::internal(format!("export manifest has no {rel}")))?;
        let info = crate::onnx::OnnxModelInfo::read(&dir)?;
        let encoder = OrtEncoder::from_settings(&dir, ctx.config)?;
        let key = format!("onnx-{hash}");
        let embeddings = EmbeddingCache::open(ctx.cache_root(), &key, info.embedding_dim)?;
        let tokens = TokenCache::open(ctx.cache_root(), &key, info.token_dim)?;
        Ok(ExportedModel { dir, key, info, encoder, embeddings, tokens })
    }

    /// Embed what the caches lack on the executor of `s` (see [`crate::executor`]); afterwards every text of
    /// `texts` is a cache hit.
    pub fn prefill(&mut self, s: &Settings, texts: &[&str], what: &str) -> Result<crate::executor::Prefill> {
        let m = crate::executor::Model {
            dir: &self.dir,
            key: &self.key,
            encoder: &self.encoder,
            embeddings: &mut self.embeddings,
            tokens: &mut self.tokens,
        };
        crate::executor::prefill(s, m, texts, what)
    }

    /// Sentence and token embeddings of `texts` through the caches (see [`crate::embed::cache::embed_cached`]); caches are flushed.
    pub fn embed(&mut self, texts: &[&str], what: &str) -> Result<(Vec<f32>, Vec<Vec<f32>>, usize)> {
        let before = self.embeddings.misses;
        let out =
            crate::embed::cache::embed_cached(&self.encoder, &mut self.embeddings, &mut self.tokens, texts, what)?;
        self.embeddings.flush()?;
        self.tokens.flush()?;
        Ok((out.0, out.1, self.embeddings.misses - before))
    }
}
