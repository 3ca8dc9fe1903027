//! Sentence encoder on libtorch (tch): BERT and MPNet ports that reproduce sentence-transformers.
//!
//! **What.** The one seam through which the chunk / mine / train stages run the sentence encoder
//! (sentence-transformers/all-MiniLM-L6-v2, all-mpnet-base-v2, or a fine-tuned copy of either). [`Encoder`]
//! holds the [`TransformerModel`] that `config.json`'s `model_type` asks for ([`bert`] or [`mpnet`], over the
//! shared blocks of [`layers`]) and its `VarStore`, the tokenizer, `max_seq_length` and the device. It gives sentence
//! embeddings exactly as `SentenceTransformer.encode(..., normalize_embeddings=True)` (Transformer →
//! mean Pooling → Normalize), token embeddings (the last hidden state) for late interaction, and the
//! pieces training needs ([`Encoder::forward`] with dropout, [`mean_pool`], [`l2_normalize`]).
//!
//! **Inputs.** A model directory as sentence-transformers saves it: `config.json` ([`ModelConfig`]: `model_type`
//! `"bert"` or `"mpnet"`), `model.safetensors` (HF keys without a `bert.`/`mpnet.` prefix), `tokenizer.json`
//! (`[CLS]`/`[SEP]` for BERT, `<s>`/`</s>` for MPNet, as the file says), and optionally
//! `sentence_bert_config.json` (`max_seq_length`, 256 for MiniLM, 384 for MPNet), `modules.json` and
//! `1_Pooling/config.json` (checked to be mean pooling). Nothing is downloaded. Texts are `&str`.
//!
//! **Outputs.** [`Embeddings`]: one flat row-major `Vec<f32>` of `len × dim` unit vectors in input order;
//! [`TokenEmbeddings`]: per text, its unpadded `[tokens, dim]` hidden states and token ids.
//!
//! **Behaviour.** Texts are tokenised in parallel (tokenizers' `encode_batch`, on rayon), truncated to
//! `max_seq_length`, grouped into batches by token length (longest first), padded to the longest text
//! of each batch, run under `no_grad`, and scattered back into the original order. libtorch's intra-op
//! thread count is left at its default unless [`set_num_threads`] is called.
//!
//! **Example.**
//! ```no_run
//! use coltrast_torch::encoder::Encoder;
//! let enc = Encoder::load(std::path::Path::new("models/all-MiniLM-L6-v2"), tch::Device::Cpu)?;
//! let emb = enc.embed(&["What AI model is used for medical diagnosis?", "ResNet-50 on X-rays."], 32)?;
//! let cos: f32 = emb.row(0).iter().zip(emb.row(1)).map(|(a, b)| a * b).sum();
//! println!("dim {} cos {cos:.3}", emb.dim);
//! # Ok::<(), coltrast_torch::encoder::EncoderError>(())
//! ```

mod batching;
pub mod bert;
mod config;
mod error;
pub mod layers;
mod model;
pub mod mpnet;
mod pooling;

use std::path::{Path, PathBuf};

use tch::{nn, Device, Kind, Tensor};
use tokenizers::Tokenizer;

pub use batching::{length_sorted_batches, pad_batch, Batch, TokenizedText};
pub use bert::{BertEmbeddings, BertModel};
pub use config::{Architecture, HiddenAct, ModelConfig, SUPPORTED_MODEL_TYPES};
pub use error::EncoderError;
pub use layers::{attention_mask_bias, Intermediate, LayerStack, MultiHeadAttention, ResidualOutput, TransformerLayer};
pub use model::TransformerModel;
pub use mpnet::{MPNetEmbeddings, MPNetEncoder, MPNetModel};
pub use pooling::{l2_normalize, mean_pool};

use batching::to_vec_f32;

pub use coltrast::embed::Embeddings;

/// The last hidden state of one text, without padding: `ids.len()` rows of `dim` floats.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEmbeddings {
    /// Token ids, with `[CLS]` (`<s>`) first and `[SEP]` (`</s>`) last, truncated to `max_seq_length`.
    pub ids: Vec<i64>,
    pub dim: usize,
    /// Row-major `[ids.len(), dim]`.
    pub data: Vec<f32>,
}

impl TokenEmbeddings {
    /// Token `t`'s vector. Panics if `t >= ids.len()`.
    pub fn token(&self, t: usize) -> &[f32] {
        &self.data[t * self.dim..(t + 1) * self.dim]
    }
}

/// Sets libtorch's intra-op thread count for the whole process (tch's default is one per core).
pub fn set_num_threads(n: usize) {
    tch::set_num_threads(n.clamp(1, i32::MAX as usize) as i32);
}

/// A BERT or MPNet sentence encoder with its tokenizer, weights and device.
#[derive(Debug)]
pub struct Encoder {
    config: ModelConfig,
    model: TransformerModel,
    vs: nn::VarStore,
    tokenizer: Tokenizer,
    max_seq_length: usize,
    device: Device,
}

impl Encoder {
    /// Loads a sentence-transformers model directory (see the module docs for the files) onto `device`.
    pub fn load(model_dir: &Path, device: Device) -> Result<Encoder, EncoderError> {
        if !model_dir.is_dir() {
            if looks_like_hub_id(model_dir) {
                return Err(EncoderError::NotDownloadable { id: model_dir.to_string_lossy().into_owned() });
            }
            return Err(EncoderError::MissingModelDir { path: model_dir.to_path_buf() });
        }
        let config = ModelConfig::from_file(&model_dir.join("config.json"))?;
        let pooling_dir = check_modules(model_dir)?;
        check_pooling(&model_dir.join(pooling_dir).join("config.json"))?;
        let max_seq_length = read_max_seq_length(model_dir, &config)?;

        let tokenizer_path = model_dir.join("tokenizer.json");
        require_file(&tokenizer_path, "tokenizer.json (the fast tokenizer)")?;
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|source| EncoderError::TokenizerLoad { path: tokenizer_path.clone(), source })?;

        let weights_path = model_dir.join("model.safetensors");
        require_file(&weights_path, "model.safetensors (the weights)")?;
        let mut encoder = Self::build(config, tokenizer, max_seq_length, device, &tokenizer_path)?;
        check_checkpoint(&weights_path, &encoder.vs)?;
        encoder
            .vs
            .load(&weights_path)
            .map_err(|source| EncoderError::Weights { path: weights_path.clone(), source })?;
        // VarStore::load adopts the file's dtype; run in float32 whatever the checkpoint stores.
        encoder.vs.float();
        Ok(encoder)
    }

    /// A freshly initialised model (transformers' init: normal(0, initializer_range) weights, zero
    /// biases, unit LayerNorms) with a deterministic generator seeded by `seed`, independent of
    /// libtorch's global RNG. For unit tests on tiny models and for training from scratch.
    pub fn random(
        config: ModelConfig,
        tokenizer: Tokenizer,
        max_seq_length: usize,
        device: Device,
        seed: u64,
    ) -> Result<Encoder, EncoderError> {
        let origin = PathBuf::from("<in-memory config>");
        config.validate().map_err(|(field, message)| EncoderError::Config { path: origin.clone(), field, message })?;
        if max_seq_length as i64 > config.max_positions() || max_seq_length < 2 {
            return Err(EncoderError::InvalidArgument(format!(
                "max_seq_length {max_seq_length} must be in [2, {}] (the positions a {} model with \
                 max_position_embeddings={} has)",
                config.max_positions(),
                config.model_type(),
                config.max_position_embeddings
            )));
        }
        let encoder = Self::build(config, tokenizer, max_seq_length, device, &origin)?;
        encoder.fill_random(seed)?;
        Ok(encoder)
    }

    fn build(
        config: ModelConfig,
        mut tokenizer: Tokenizer,
        max_seq_length: usize,
        device: Device,
        tokenizer_path: &Path,
    ) -> Result<Encoder, EncoderError> {
        let tokenizer_vocab = tokenizer.get_vocab_size(true);
        if tokenizer_vocab as i64 > config.vocab_size {
            return Err(EncoderError::Config {
                path: tokenizer_path.to_path_buf(),
                field: "model.vocab".to_string(),
                message: format!(
                    "the tokenizer has {tokenizer_vocab} tokens but config.json's vocab_size is {}",
                    config.vocab_size
                ),
            });
        }
        // tokenizer.json may carry its own padding/truncation (MiniLM's: fixed 128); replace them with
        // sentence-transformers' behaviour: no padding here (batches are padded to their longest text
        // later) and truncation at max_seq_length.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_seq_length,
                strategy: tokenizers::TruncationStrategy::LongestFirst,
                stride: 0,
                direction: tokenizers::TruncationDirection::Right,
            }))
            .map_err(|source| EncoderError::TokenizerLoad { path: tokenizer_path.to_path_buf(), source })?;
        let vs = nn::VarStore::new(device);
        let model = TransformerModel::new(vs.root(), &config);
        Ok(Encoder { config, model, vs, tokenizer, max_seq_length, device })
    }

    /// Overwrites every weight matrix with normal(0, initializer_range) draws from a generator seeded
    /// by `seed` (variables in name order), and zeroes the padding row of the embeddings that have one
    /// (the word embeddings; for MPNet also the position embeddings, as transformers' init).
    fn fill_random(&self, seed: u64) -> Result<(), EncoderError> {
        let mut rng = SplitMix64(seed);
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let std = self.config.initializer_range;
        let _guard = tch::no_grad_guard();
        for (name, mut var) in vars {
            if !name.ends_with(".weight") || name.contains("LayerNorm") {
                continue;
            }
            let numel: usize = var.size().iter().product::<i64>() as usize;
            let values: Vec<f32> = (0..numel).map(|_| (rng.normal() * std) as f32).collect();
            let src = Tensor::from_slice(&values).view(var.size().as_slice()).to_device(self.device);
            var.f_copy_(&src)?;
            let mpnet = matches!(self.config.arch, Architecture::MPNet { .. });
            if name == "embeddings.word_embeddings.weight" || (mpnet && name == "embeddings.position_embeddings.weight")
            {
                let _ = var.get(self.config.pad_token_id).f_fill_(0.0)?;
            }
        }
        Ok(())
    }

    /// The architecture.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The module tree (for training code that wants to run blocks directly).
    pub fn model(&self) -> &TransformerModel {
        &self.model
    }

    /// The weights, named as the HF checkpoint (for optimisers, saving, freezing).
    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Mutable access to the weights (e.g. `load`, `set_device`, `freeze`).
    pub fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The tokenizer, configured with truncation at `max_seq_length` and no padding.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Longest input in tokens, special tokens included; longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Width of the embeddings (`hidden_size`).
    pub fn dim(&self) -> usize {
        self.config.hidden_size as usize
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Tokenises `texts` in parallel: `[CLS] … [SEP]` (MPNet: `<s> … </s>`), truncated to `max_seq_length`,
    /// unpadded.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<TokenizedText>, EncoderError> {
        let encodings =
            self.tokenizer.encode_batch(texts.to_vec(), true).map_err(|source| EncoderError::Tokenize { source })?;
        Ok(encodings
            .iter()
            .map(|e| TokenizedText {
                ids: e.get_ids().iter().map(|&i| i as i64).collect(),
                type_ids: e.get_type_ids().iter().map(|&i| i as i64).collect(),
            })
            .collect())
    }

    /// Tokenises `texts` and pads them into one batch on the model's device (for training).
    pub fn batch(&self, texts: &[&str]) -> Result<Batch, EncoderError> {
        if texts.is_empty() {
            return Err(EncoderError::InvalidArgument("cannot build a batch of zero texts".to_string()));
        }
        let tokens = self.tokenize(texts)?;
        let refs: Vec<&TokenizedText> = tokens.iter().collect();
        Ok(pad_batch(&refs, self.config.pad_token_id, self.device))
    }

    /// Runs the model: `input_ids`, `attention_mask` (1 = token, 0 = padding) and optional
    /// `token_type_ids` (zeros when `None`; MPNet accepts only zeros), all `[b, s]` int64 →
    /// `last_hidden_state` `[b, s, hidden]`.
    /// Dropout is active only when `train`; gradients are tracked unless the caller is in `no_grad`.
    /// Shapes and id ranges are checked so bad input is an error, not a libtorch abort.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor, EncoderError> {
        let size = input_ids.size();
        if size.len() != 2 || size[0] == 0 || size[1] == 0 {
            return Err(EncoderError::InvalidArgument(format!(
                "input_ids must be a non-empty [batch, seq] tensor, got shape {size:?}"
            )));
        }
        if size[1] > self.config.max_positions() {
            return Err(EncoderError::InvalidArgument(format!(
                "sequence length {} exceeds the {} positions of this {} model (max_position_embeddings {})",
                size[1],
                self.config.max_positions(),
                self.config.model_type(),
                self.config.max_position_embeddings
            )));
        }
        let token_type_ids = match token_type_ids {
            Some(t) => t.to_device(self.device),
            None => Tensor::zeros(size.as_slice(), (Kind::Int64, self.device)),
        };
        for (name, t, limit) in [
            ("input_ids", input_ids, self.config.vocab_size),
            ("attention_mask", attention_mask, 2),
            ("token_type_ids", &token_type_ids, self.config.token_types()),
        ] {
            if t.size() != size {
                return Err(EncoderError::InvalidArgument(format!(
                    "{name} has shape {:?}, input_ids has {size:?}",
                    t.size()
                )));
            }
            if !matches!(t.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 | Kind::Bool) {
                return Err(EncoderError::InvalidArgument(format!(
                    "{name} must be an integer tensor, got {:?}",
                    t.kind()
                )));
            }
            let (lo, hi) = (t.min().int64_value(&[]), t.max().int64_value(&[]));
            if lo < 0 || hi >= limit {
                return Err(EncoderError::InvalidArgument(format!(
                    "{name} values must be in [0, {limit}), got [{lo}, {hi}]"
                )));
            }
        }
        let input_ids = input_ids.to_device(self.device).to_kind(Kind::Int64);
        let attention_mask = attention_mask.to_device(self.device).to_kind(Kind::Int64);
        let token_type_ids = token_type_ids.to_kind(Kind::Int64);
        Ok(self.model.forward_t(&input_ids, &attention_mask, &token_type_ids, train))
    }

    /// Runs the model on length-sorted batches of `texts` under `no_grad`, handing each batch's
    /// indices, padded batch and last hidden state to `visit`.
    fn run_batches(
        &self,
        tokens: &[TokenizedText],
        batch_size: usize,
        mut visit: impl FnMut(&[usize], &Batch, &Tensor) -> Result<(), EncoderError>,
    ) -> Result<(), EncoderError> {
        if batch_size == 0 {
            return Err(EncoderError::InvalidArgument("batch_size must be at least 1".to_string()));
        }
        let _guard = tch::no_grad_guard();
        let lengths: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        for indices in length_sorted_batches(&lengths, batch_size) {
            let items: Vec<&TokenizedText> = indices.iter().map(|&i| &tokens[i]).collect();
            let batch = pad_batch(&items, self.config.pad_token_id, self.device);
            let hidden = self.forward(&batch.input_ids, &batch.attention_mask, Some(&batch.token_type_ids), false)?;
            visit(&indices, &batch, &hidden)?;
        }
        Ok(())
    }

    /// Sentence embeddings of `texts`, as sentence-transformers' `encode(normalize_embeddings=True)`:
    /// mean pooling over the attention mask, then L2 normalisation. Rows follow the input order.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Embeddings, EncoderError> {
        let dim = self.dim();
        let tokens = self.tokenize(texts)?;
        let mut data = vec![0f32; texts.len() * dim];
        self.run_batches(&tokens, batch_size, |indices, batch, hidden| {
            let pooled = l2_normalize(&mean_pool(hidden, &batch.attention_mask));
            let values = to_vec_f32(&pooled)?;
            for (row, &i) in indices.iter().enumerate() {
                data[i * dim..(i + 1) * dim].copy_from_slice(&values[row * dim..(row + 1) * dim]);
            }
            Ok(())
        })?;
        Ok(Embeddings { dim, data })
    }

    /// Token embeddings (the raw last hidden state, not normalised) of each text, without padding.
    pub fn embed_tokens(&self, texts: &[&str], batch_size: usize) -> Result<Vec<TokenEmbeddings>, EncoderError> {
        let dim = self.dim();
        let tokens = self.tokenize(texts)?;
        let mut out: Vec<Option<TokenEmbeddings>> = vec![None; texts.len()];
        self.run_batches(&tokens, batch_size, |indices, _batch, hidden| {
            for (row, &i) in indices.iter().enumerate() {
                let n = tokens[i].len() as i64;
                let data = to_vec_f32(&hidden.get(row as i64).narrow(0, 0, n))?;
                out[i] = Some(TokenEmbeddings { ids: tokens[i].ids.clone(), dim, data });
            }
            Ok(())
        })?;
        Ok(out.into_iter().flatten().collect())
    }
}

/// True for strings shaped like a Hugging Face hub id (`owner/name`) rather than a filesystem path.
fn looks_like_hub_id(path: &Path) -> bool {
    let s = path.to_string_lossy();
    let parts: Vec<&str> = s.split('/').collect();
    !path.exists()
        && !path.is_absolute()
        && !s.starts_with('.')
        && !s.starts_with('~')
        && parts.len() == 2
        && parts.iter().all(|p| !p.is_empty())
}

fn require_file(path: &Path, what: &'static str) -> Result<(), EncoderError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(EncoderError::MissingFile { path: path.to_path_buf(), what })
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value, EncoderError> {
    let text = std::fs::read_to_string(path).map_err(|source| EncoderError::Io { path: path.to_path_buf(), source })?;
    serde_json::from_str(&text).map_err(|e| EncoderError::Config {
        path: path.to_path_buf(),
        field: "(top level)".to_string(),
        message: format!("invalid JSON: {e}"),
    })
}

/// Checks `modules.json` (when present) lists only Transformer → Pooling → Normalize, the pipeline this
/// encoder reproduces, and returns the Pooling module's folder (`1_Pooling` by default).
fn check_modules(model_dir: &Path) -> Result<PathBuf, EncoderError> {
    let path = model_dir.join("modules.json");
    if !path.is_file() {
        return Ok(PathBuf::from("1_Pooling"));
    }
    let value = read_json(&path)?;
    let modules = value.as_array().ok_or_else(|| EncoderError::Config {
        path: path.clone(),
        field: "(top level)".to_string(),
        message: "expected a list of modules".to_string(),
    })?;
    let mut pooling_dir = PathBuf::from("1_Pooling");
    for (i, module) in modules.iter().enumerate() {
        let kind = module.get("type").and_then(|t| t.as_str()).ok_or_else(|| EncoderError::Config {
            path: path.clone(),
            field: format!("[{i}].type"),
            message: "missing or not a string".to_string(),
        })?;
        let short = kind.rsplit('.').next().unwrap_or(kind);
        match short {
            "Transformer" | "Normalize" => {}
            "Pooling" => {
                if let Some(p) = module.get("path").and_then(|p| p.as_str()) {
                    pooling_dir = PathBuf::from(p);
                }
            }
            _ => {
                return Err(EncoderError::Unsupported {
                    path: path.clone(),
                    message: format!(
                        "module [{i}] is {kind}; only Transformer, Pooling (mean) and Normalize are implemented"
                    ),
                })
            }
        }
    }
    Ok(pooling_dir)
}

/// Checks the Pooling config (when present) asks for mean pooling only, the one mode implemented.
fn check_pooling(path: &Path) -> Result<(), EncoderError> {
    if !path.is_file() {
        tracing::warn!(path = %path.display(), "no pooling config; assuming mean pooling");
        return Ok(());
    }
    let value = read_json(path)?;
    let flag = |key: &str| value.get(key).and_then(|v| v.as_bool()).unwrap_or(false);
    if !flag("pooling_mode_mean_tokens") {
        return Err(EncoderError::Unsupported {
            path: path.to_path_buf(),
            message: "pooling_mode_mean_tokens is not true; only mean pooling is implemented".to_string(),
        });
    }
    for key in [
        "pooling_mode_cls_token",
        "pooling_mode_max_tokens",
        "pooling_mode_mean_sqrt_len_tokens",
        "pooling_mode_weightedmean_tokens",
        "pooling_mode_lasttoken",
    ] {
        if flag(key) {
            return Err(EncoderError::Unsupported {
                path: path.to_path_buf(),
                message: format!("{key} is true; only mean pooling is implemented"),
            });
        }
    }
    Ok(())
}

/// `max_seq_length` from `sentence_bert_config.json`, as sentence-transformers; without that file, the
/// positions the model has ([`ModelConfig::max_positions`]). Never more than that.
fn read_max_seq_length(model_dir: &Path, config: &ModelConfig) -> Result<usize, EncoderError> {
    let path = model_dir.join("sentence_bert_config.json");
    let limit = config.max_positions() as usize;
    if !path.is_file() {
        tracing::warn!(path = %path.display(), limit, "no sentence_bert_config.json; max_seq_length = the model's positions");
        return Ok(limit);
    }
    let value = read_json(&path)?;
    let bad =
        |message: String| EncoderError::Config { path: path.clone(), field: "max_seq_length".to_string(), message };
    let n = match value.get("max_seq_length") {
        None | Some(serde_json::Value::Null) => return Ok(limit),
        Some(v) => v.as_u64().ok_or_else(|| bad(format!("expected a positive integer, got {v}")))?,
    };
    if n < 2 {
        return Err(bad(format!("must be at least 2 (room for [CLS] and [SEP]), got {n}")));
    }
    if n as usize > limit {
        tracing::warn!(path = %path.display(), n, limit, "max_seq_length exceeds the model's positions; clamped");
    }
    Ok((n as usize).min(limit))
}

/// Reads the safetensors header and checks every model variable is in the file with the same shape,
/// so a config/checkpoint mismatch is reported by name instead of being broadcast or aborting.
fn check_checkpoint(path: &Path, vs: &nn::VarStore) -> Result<(), EncoderError> {
    use std::io::Read;
    let io = |source| EncoderError::Io { path: path.to_path_buf(), source };
    let bad = |field: String, message: String| EncoderError::Config { path: path.to_path_buf(), field, message };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    let file_len = file.metadata().map_err(io)?.len();
    if header_len > file_len.saturating_sub(8) || header_len > 100 << 20 {
        return Err(bad("(header)".to_string(), format!("not a safetensors file (header length {header_len})")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| bad("(header)".to_string(), format!("not a safetensors header: {e}")))?;
    let mut names: Vec<(String, Vec<i64>)> = vs.variables().into_iter().map(|(name, t)| (name, t.size())).collect();
    names.sort();
    for (name, expected) in names {
        let entry = header.get(&name).ok_or_else(|| {
            bad(
                name.clone(),
                "tensor missing from the checkpoint (is it a model of config.json's model_type, saved without a \
                 `bert.`/`mpnet.` prefix?)"
                    .to_string(),
            )
        })?;
        let shape: Option<Vec<i64>> =
            entry.get("shape").and_then(|s| s.as_array()).map(|dims| dims.iter().filter_map(|d| d.as_i64()).collect());
        if shape.as_ref() != Some(&expected) {
            return Err(bad(name, format!("shape {shape:?} in the checkpoint, but config.json implies {expected:?}")));
        }
    }
    Ok(())
}

/// A small deterministic generator (SplitMix64) for reproducible fresh weights.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A BERT-style WordPiece tokenizer over a small vocabulary, for tests with tiny models: ids 0..5 are
/// `[PAD] [UNK] [CLS] [SEP] [MASK]`, then `words` in order. Lower-cases like MiniLM's tokenizer.
pub fn toy_tokenizer(words: &[&str]) -> Result<Tokenizer, EncoderError> {
    let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
    let post = serde_json::json!({"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]});
    toy_wordpiece(&specials, "[UNK]", post, words)
}

/// An MPNet-style tokenizer over a small vocabulary, for tests with tiny MPNets: ids 0..5 are
/// `<s> <pad> </s> <unk> <mask>` (so `<pad>` is 1, MPNet's padding id), then `words` in order; texts become
/// `<s> … </s>` (RobertaProcessing, as all-mpnet-base-v2's tokenizer.json). Lower-cases like MPNet's.
pub fn toy_mpnet_tokenizer(words: &[&str]) -> Result<Tokenizer, EncoderError> {
    let specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];
    let post = serde_json::json!({"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                                  "trim_offsets": true, "add_prefix_space": false});
    toy_wordpiece(&specials, "<unk>", post, words)
}

fn toy_wordpiece(
    specials: &[&str],
    unk: &str,
    post_processor: serde_json::Value,
    words: &[&str],
) -> Result<Tokenizer, EncoderError> {
    // Consecutive ids over the distinct tokens (a repeated word keeps its first id), so the largest id is
    // vocab size - 1.
    let mut vocab = serde_json::Map::new();
    for w in specials.iter().chain(words.iter()) {
        let next = vocab.len();
        vocab.entry(w.to_string()).or_insert(serde_json::json!(next));
    }
    let added: Vec<serde_json::Value> = specials
        .iter()
        .enumerate()
        .map(|(i, s)| {
            serde_json::json!({"id": i, "content": s, "single_word": false, "lstrip": false,
                               "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": post_processor,
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": unk, "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab}
    });
    Tokenizer::from_bytes(json.to_string().as_bytes())
        .map_err(|source| EncoderError::TokenizerLoad { path: PathBuf::from("<toy tokenizer>"), source })
}

#[cfg(test)]
mod tests;
