//! [`OrtEncoder`]: tokenise, batch by a padded-token budget, run the exported model in ONNX Runtime.
//!
//! What: texts → token ids (parallel, truncated at `max_seq_length`) → sorted by length, longest first →
//! batches whose `size × longest` stays within the token budget → padded int64 inputs → one ONNX Runtime
//! run per batch → rows scattered back to input order.
//!
//! Inputs: an ONNX directory (`onnx_model.json`, the model file, `tokenizer.json`), the ONNX Runtime
//! library path and [`EncoderOptions`].
//!
//! Outputs: [`Embeddings`], [`TokenRows`], or raw [`OutputTensor`]s from [`OrtEncoder::run_batch`].
//!
//! Example:
//! ```no_run
//! use coltrast::embed::{EncoderOptions, OrtEncoder};
//! let opts = EncoderOptions { intra_threads: 2, max_batch_tokens: 4096, ..Default::default() };
//! let enc = OrtEncoder::load_with("onnx".as_ref(), "/cache/libonnxruntime.so".as_ref(), opts)?;
//! let tokens = enc.embed_tokens(&["late interaction"])?;
//! assert_eq!(tokens[0].ids.len(), tokens[0].len());
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{OutputSelector, RunOptions, Session};
use ort::value::Tensor;
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

use super::openvino::OvSession;
use super::runtime::{environment, ort_err, use_device};
use crate::error::{Error, Result};
use crate::onnx::{
    OnnxModelInfo, Quantize, ATTENTION_MASK, INPUT_IDS, SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS, TOKEN_TYPE_IDS,
};
use crate::settings::{ModelDevice, ModelEngine, Precision, Settings};

/// The engine an encoder runs on, resolved (no `auto` left): what `model.engine` and `model.precision` become
/// on this CPU ([`Engine::from_settings`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Engine {
    /// ONNX Runtime, on [`EncoderOptions::device`].
    OnnxRuntime,
    /// OpenVINO's CPU plugin, loaded from `library`, computing in `precision` (f32 or bf16). `by_auto`: chosen
    /// by `model.engine = "auto"`, which falls back to ONNX Runtime for a model OpenVINO cannot run (the int8
    /// export); asked for by name, such a model is an error.
    OpenVino { library: PathBuf, precision: Precision, by_auto: bool },
}

/// Whether this CPU computes bfloat16 natively (AMX-BF16 or AVX-512 BF16), from /proc/cpuinfo's flags.
pub fn cpu_has_native_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").map(|t| cpuinfo_has_native_bf16(&t)).unwrap_or(false)
}

/// [`cpu_has_native_bf16`] on the text of /proc/cpuinfo.
pub fn cpuinfo_has_native_bf16(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().any(|f| f == "amx_bf16" || f == "avx512_bf16"))
        .unwrap_or(false)
}

impl Engine {
    /// `model.engine` and `model.precision` on this CPU: `auto` picks OpenVINO with bf16 where the CPU computes
    /// bf16 natively and the OpenVINO runtime is installed, ONNX Runtime elsewhere (and always on CUDA).
    pub fn from_settings(settings: &Settings, device: ModelDevice) -> Engine {
        Self::resolve(
            settings.model.engine,
            settings.model.precision,
            device,
            settings.openvino_library_path(),
            cpu_has_native_bf16(),
        )
    }

    /// [`Engine::from_settings`] with the CPU's bf16 support and the library path given.
    pub fn resolve(
        engine: ModelEngine,
        precision: Precision,
        device: ModelDevice,
        library: PathBuf,
        native_bf16: bool,
    ) -> Engine {
        let precision = match precision {
            Precision::Auto if native_bf16 => Precision::Bf16,
            Precision::Auto => Precision::F32,
            p => p,
        };
        match engine {
            ModelEngine::Onnxruntime => Engine::OnnxRuntime,
            ModelEngine::Openvino => Engine::OpenVino { library, precision, by_auto: false },
            ModelEngine::Auto => {
                if device == ModelDevice::Cpu && native_bf16 && library.exists() {
                    Engine::OpenVino { library, precision, by_auto: true }
                } else {
                    Engine::OnnxRuntime
                }
            }
        }
    }
}

/// Tuning of an [`OrtEncoder`]. Speed only: results do not depend on it (beyond float rounding).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderOptions {
    /// ONNX Runtime intra-op threads; 0 = ONNX Runtime's default (one per physical core).
    pub intra_threads: usize,
    /// At most this many padded tokens (batch size × longest sequence) per run. Default 8192.
    pub max_batch_tokens: usize,
    /// At most this many texts per run. Default 256.
    pub max_batch_size: usize,
    /// Whether ONNX Runtime's intra-op threads spin while waiting for work (its default). A server on few
    /// cores turns it off, so idle spinning does not take the cores its other threads need.
    pub spin: bool,
    /// ONNX Runtime's execution provider: the CPU (default) or CUDA (an error if this library or machine has
    /// none; see [`super::runtime::use_device`]).
    pub device: ModelDevice,
    /// The engine (ONNX Runtime by default).
    pub engine: Engine,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        EncoderOptions {
            intra_threads: 0,
            max_batch_tokens: 8192,
            max_batch_size: 256,
            spin: true,
            device: ModelDevice::Cpu,
            engine: Engine::OnnxRuntime,
        }
    }
}

pub use super::embeddings::Embeddings;

/// One text's token embeddings: every real token ([CLS] and [SEP] included, padding excluded), row-major
/// `[ids.len(), dim]`, each row L2-normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRows {
    pub dim: usize,
    pub ids: Vec<u32>,
    pub data: Vec<f32>,
}

impl TokenRows {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// One output of one run: shape and data (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What runs the model: an ONNX Runtime session or an OpenVINO compiled model.
enum Backend {
    Ort(Mutex<Session>),
    OpenVino(Mutex<OvSession>),
}

/// The exported model in an engine (ONNX Runtime, or OpenVINO with `model.engine`) plus its tokenizer.
/// `Sync`: runs are serialised internally (the engines parallelise inside a run).
pub struct OrtEncoder {
    dir: PathBuf,
    info: OnnxModelInfo,
    tokenizer: Tokenizer,
    backend: Backend,
    /// engine name, its version, and what it computes in, e.g. ("openvino", "2026.4.1-…", "bf16")
    engine_label: (&'static str, String, String),
    opts: EncoderOptions,
}

// Index and query code shares one encoder across threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<OrtEncoder>();
};

/// A batch takes a shorter text only while that text's padding stays within this many tokens or an eighth
/// of the batch's longest text, whichever is more (see [`plan_batches`]).
pub const PAD_SLACK_TOKENS: usize = 16;

/// Consecutive ranges over items sorted by decreasing length: each range's `len × first length` stays
/// within `max_tokens` (a single over-long item still gets its own batch), holds at most `max_batch`, and
/// pads none of its items by more than `max(PAD_SLACK_TOKENS, first length / 8)` tokens.
///
/// Padding is computed for nothing: a transformer's cost grows with the padded tokens, and the sequence
/// already gives its matrix products their rows, so a smaller batch of similar lengths is cheaper than a
/// wide one of mixed lengths. This matters where a call brings few texts of mixed lengths: 32 passages per
/// `/v1/embeddings` request ran at 0.58x of the in-process, globally sorted rate without the rule and at
/// 1.09x with it (ONNX Runtime; OpenVINO 0.53x → 0.90x; `BENCH=serve-http`, AVX-512 CPU without AMX). Over
/// thousands of sorted texts the neighbours are close anyway.
pub fn plan_batches(sorted_lens: &[usize], max_tokens: usize, max_batch: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted_lens.len() {
        let width = sorted_lens[i].max(1);
        let cap = (max_tokens / width).clamp(1, max_batch.max(1)).min(sorted_lens.len() - i);
        let slack = PAD_SLACK_TOKENS.max(width / 8);
        let n = 1 + sorted_lens[i + 1..i + cap].iter().take_while(|&&l| width.saturating_sub(l) <= slack).count();
        out.push(i..i + n);
        i += n;
    }
    out
}

impl OrtEncoder {
    /// Load `onnx_dir` (written by [`crate::onnx::export_sentence_model`]) with default batching.
    pub fn load(onnx_dir: &Path, ort_library: &Path, intra_threads: usize) -> Result<OrtEncoder> {
        Self::load_with(onnx_dir, ort_library, EncoderOptions { intra_threads, ..EncoderOptions::default() })
    }

    /// Load with the library path, thread count and device of the settings (`model.ort_library`,
    /// `model.threads`, `model.device`).
    pub fn from_settings(onnx_dir: &Path, settings: &Settings) -> Result<OrtEncoder> {
        Self::from_settings_on(onnx_dir, settings, settings.model.device)
    }

    /// As [`OrtEncoder::from_settings`], on `device` whatever `model.device` says (export checks parity on the
    /// CPU).
    pub fn from_settings_on(onnx_dir: &Path, settings: &Settings, device: ModelDevice) -> Result<OrtEncoder> {
        let intra_threads = settings.model.threads.map_or(0, |n| n.get());
        let engine = Engine::from_settings(settings, device);
        let opts = EncoderOptions { intra_threads, device, engine, ..EncoderOptions::default() };
        Self::load_with(onnx_dir, &settings.ort_library_path(), opts)
    }

    /// Load with explicit options; `ort_library` is only loaded when the engine is ONNX Runtime.
    pub fn load_with(onnx_dir: &Path, ort_library: &Path, opts: EncoderOptions) -> Result<OrtEncoder> {
        let mut env = match opts.engine {
            Engine::OnnxRuntime => Some(environment(ort_library)?),
            Engine::OpenVino { .. } => None,
        };
        let info = OnnxModelInfo::read(onnx_dir)?;
        let model_path = onnx_dir.join(&info.model_file);
        if !model_path.is_file() {
            return Err(Error::Usage(format!(
                "{}: missing (named by {})",
                model_path.display(),
                onnx_dir.join(crate::onnx::INFO_FILE).display()
            )));
        }
        let tok_path = onnx_dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::Usage(format!("{}: missing", tok_path.display())));
        }
        let mut tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::data(&tok_path, "tokenizer", format!("cannot load: {e}")))?;
        // tokenizer.json may carry its own truncation (MiniLM's says 128) and fixed padding: we truncate at
        // the model's max_seq_length and pad per batch ourselves.
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: info.max_seq_length, ..Default::default() }))
            .map_err(|e| Error::data(&tok_path, "truncation", e.to_string()))?;
        tokenizer.with_padding(None);

        let int8 = info.quantize == Quantize::Int8;
        // OpenVINO's CPU plugin cannot run the int8 export's per-token activation quantisation (QuantizeLinear
        // with one scale per row): `auto` keeps that model on ONNX Runtime, a request by name is refused.
        let mut opts = opts;
        if let (Engine::OpenVino { by_auto, .. }, true) = (&opts.engine, int8) {
            if !by_auto {
                return Err(Error::Usage(format!(
                    "{}: model.engine = \"openvino\" cannot run the int8 export (export.quantize = \"int8\"); use \
                     \"onnxruntime\" or \"auto\" for it",
                    model_path.display()
                )));
            }
            opts.engine = Engine::OnnxRuntime;
            env = Some(environment(ort_library)?);
        }
        if let Engine::OpenVino { library, precision, .. } = &opts.engine {
            if opts.device != ModelDevice::Cpu {
                return Err(Error::Usage(
                    "model.engine = \"openvino\" runs on the CPU only (model.device = \"cpu\")".into(),
                ));
            }
            let ov = OvSession::load(library, &model_path, opts.intra_threads, *precision)?;
            // the int8 export never gets here (above)
            let engine_label = ("openvino", ov.version().to_string(), ov.precision().as_str().to_string());
            return Ok(OrtEncoder {
                dir: onnx_dir.to_path_buf(),
                info,
                tokenizer,
                backend: Backend::OpenVino(Mutex::new(ov)),
                engine_label,
                opts,
            });
        }
        let Some(env) = env else {
            return Err(Error::Internal("ONNX Runtime's environment was not loaded".into()));
        };
        let mut builder = Session::builder(&env).map_err(|e| ort_err("session builder", e))?;
        builder = use_device(builder, opts.device, ort_library)?;
        builder = builder
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| ort_err("optimization level", e))?;
        if opts.intra_threads > 0 {
            builder = builder.with_intra_threads(opts.intra_threads).map_err(|e| ort_err("intra threads", e))?;
        }
        builder = builder.with_inter_threads(1).map_err(|e| ort_err("inter threads", e))?;
        if !opts.spin {
            builder = builder.with_intra_op_spinning(false).map_err(|e| ort_err("intra-op spinning", e))?;
        }
        let session = builder.commit_from_file(&model_path).map_err(|e| {
            Error::data(&model_path, "ONNX model", format!("ONNX Runtime cannot load it: {e} (re-export it)"))
        })?;
        for want in [SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS] {
            if !session.outputs().iter().any(|o| o.name() == want) {
                return Err(Error::data(&model_path, "outputs", format!("no {want:?} output")));
            }
        }
        let computes = if int8 { "int8 (dynamic, MatMuls)" } else { "f32" }.to_string();
        let engine_label = ("onnxruntime", super::runtime::ORT_VERSION.to_string(), computes);
        Ok(OrtEncoder {
            dir: onnx_dir.to_path_buf(),
            info,
            tokenizer,
            backend: Backend::Ort(Mutex::new(session)),
            engine_label,
            opts,
        })
    }

    /// The engine that runs the model: "onnxruntime" or "openvino".
    pub fn engine(&self) -> &'static str {
        self.engine_label.0
    }
    /// The engine's version.
    pub fn engine_version(&self) -> &str {
        &self.engine_label.1
    }
    /// What the engine computes in: "f32", "bf16", "int8 (dynamic, MatMuls)", ….
    pub fn computes_in(&self) -> &str {
        &self.engine_label.2
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn info(&self) -> &OnnxModelInfo {
        &self.info
    }
    /// Width of [`OrtEncoder::embed`] rows.
    pub fn dim(&self) -> usize {
        self.info.embedding_dim
    }
    /// Width of [`OrtEncoder::embed_tokens`] rows.
    pub fn token_dim(&self) -> usize {
        self.info.token_dim
    }
    pub fn max_seq_length(&self) -> usize {
        self.info.max_seq_length
    }
    pub fn options(&self) -> &EncoderOptions {
        &self.opts
    }
    pub fn set_max_batch_tokens(&mut self, n: usize) {
        self.opts.max_batch_tokens = n.max(1);
    }
    pub fn set_max_batch_size(&mut self, n: usize) {
        self.opts.max_batch_size = n.max(1);
    }

    /// Token ids with [CLS]/[SEP], truncated at max_seq_length; tokenised in parallel, input order.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .par_iter()
            .enumerate()
            .map(|(i, t)| {
                self.tokenizer
                    .encode_fast(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| Error::Internal(format!("tokenizing text #{i}: {e}")))
            })
            .collect()
    }

    /// L2-normalised sentence embeddings, one row per text, input order.
    pub fn embed(&self, texts: &[&str]) -> Result<Embeddings> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids)
    }

    /// Sentence embeddings of pre-tokenised texts (ids as [`OrtEncoder::tokenize`] makes them).
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Embeddings> {
        let dim = self.dim();
        let mut data = vec![0f32; ids.len() * dim];
        self.run_sorted(ids, &[SENTENCE_EMBEDDING], |orig, out, b| {
            let s = &out[0];
            data[orig * dim..(orig + 1) * dim].copy_from_slice(&s.data[b * dim..(b + 1) * dim]);
        })?;
        Ok(Embeddings { dim, data })
    }

    /// Per text, the unpadded token embeddings (see [`TokenRows`]), input order.
    pub fn embed_tokens(&self, texts: &[&str]) -> Result<Vec<TokenRows>> {
        let ids = self.tokenize(texts)?;
        self.embed_tokens_ids(&ids)
    }

    pub fn embed_tokens_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<TokenRows>> {
        let t = self.token_dim();
        let mut rows: Vec<Option<TokenRows>> = vec![None; ids.len()];
        self.run_sorted(ids, &[TOKEN_EMBEDDINGS], |orig, out, b| {
            let o = &out[0];
            let width = o.shape[1];
            let n = ids[orig].len();
            let start = b * width * t;
            rows[orig] =
                Some(TokenRows { dim: t, ids: ids[orig].clone(), data: o.data[start..start + n * t].to_vec() });
        })?;
        Ok(rows.into_iter().map(|r| r.unwrap_or(TokenRows { dim: t, ids: vec![], data: vec![] })).collect())
    }

    /// Both outputs in one pass.
    pub fn embed_both(&self, texts: &[&str]) -> Result<(Embeddings, Vec<TokenRows>)> {
        let ids = self.tokenize(texts)?;
        self.embed_both_ids(&ids)
    }

    /// Both outputs of pre-tokenised texts in one pass.
    pub fn embed_both_ids(&self, ids: &[Vec<u32>]) -> Result<(Embeddings, Vec<TokenRows>)> {
        let (d, t) = (self.dim(), self.token_dim());
        let mut data = vec![0f32; ids.len() * d];
        let mut rows: Vec<Option<TokenRows>> = vec![None; ids.len()];
        self.run_sorted(ids, &[SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS], |orig, out, b| {
            data[orig * d..(orig + 1) * d].copy_from_slice(&out[0].data[b * d..(b + 1) * d]);
            let width = out[1].shape[1];
            let n = ids[orig].len();
            let start = b * width * t;
            rows[orig] =
                Some(TokenRows { dim: t, ids: ids[orig].clone(), data: out[1].data[start..start + n * t].to_vec() });
        })?;
        let rows = rows.into_iter().map(|r| r.unwrap_or(TokenRows { dim: t, ids: vec![], data: vec![] })).collect();
        Ok((Embeddings { dim: d, data }, rows))
    }

    /// Sort by length (longest first), batch by the token budget, run, and hand each text's slot back as
    /// `(original index, outputs of its batch, row within the batch)`.
    fn run_sorted(
        &self,
        ids: &[Vec<u32>],
        outputs: &[&str],
        mut each: impl FnMut(usize, &[OutputTensor], usize),
    ) -> Result<()> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let lens: Vec<usize> = order.iter().map(|&i| ids[i].len()).collect();
        for range in plan_batches(&lens, self.opts.max_batch_tokens, self.opts.max_batch_size) {
            let batch: Vec<&[u32]> = order[range.clone()].iter().map(|&i| ids[i].as_slice()).collect();
            let out = self.run_batch(&batch, outputs)?;
            for (b, &orig) in order[range].iter().enumerate() {
                each(orig, &out, b);
            }
        }
        Ok(())
    }

    /// Low level: pad one batch of token ids to its longest member (with the model's pad id), run it, return the named float outputs
    /// (padded: `[batch, longest, ..]` for token outputs). `token_type_ids` are all 0 (single sentences).
    /// Empty id lists are not allowed (every tokenised text has at least [CLS] and [SEP]).
    pub fn run_batch(&self, ids: &[&[u32]], outputs: &[&str]) -> Result<Vec<OutputTensor>> {
        let b = ids.len();
        let width = ids.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || width == 0 {
            return Err(Error::Internal("run_batch: empty batch or empty token sequence".into()));
        }
        if width > self.info.max_seq_length {
            return Err(Error::Internal(format!(
                "run_batch: sequence of {width} tokens exceeds max_seq_length {}",
                self.info.max_seq_length
            )));
        }
        let mut input_ids = vec![i64::from(self.info.pad_token_id); b * width];
        let mut mask = vec![0i64; b * width];
        for (r, seq) in ids.iter().enumerate() {
            for (c, &id) in seq.iter().enumerate() {
                input_ids[r * width + c] = id as i64;
                mask[r * width + c] = 1;
            }
        }
        let types = vec![0i64; b * width];
        let session = match &self.backend {
            Backend::Ort(s) => s,
            Backend::OpenVino(ov) => {
                let mut ov = ov.lock().unwrap_or_else(|p| p.into_inner());
                let inputs = [(INPUT_IDS, &input_ids[..]), (ATTENTION_MASK, &mask[..]), (TOKEN_TYPE_IDS, &types[..])];
                return ov.run(&inputs, b, width, outputs);
            }
        };
        let t_ids = Tensor::from_array(([b, width], input_ids)).map_err(|e| ort_err("input_ids", e))?;
        let t_mask = Tensor::from_array(([b, width], mask)).map_err(|e| ort_err("attention_mask", e))?;
        let t_types = Tensor::from_array(([b, width], types)).map_err(|e| ort_err("token_type_ids", e))?;
        let mut selector = OutputSelector::no_default();
        for name in outputs {
            selector = selector.with(*name);
        }
        let run_options = RunOptions::new().map_err(|e| ort_err("run options", e))?.with_outputs(selector);
        let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
        let result = session
            .run_with_options(
                ort::inputs![INPUT_IDS => t_ids, ATTENTION_MASK => t_mask, TOKEN_TYPE_IDS => t_types],
                &run_options,
            )
            .map_err(|e| ort_err(&format!("running {}", self.dir.display()), e))?;
        let mut out = Vec::with_capacity(outputs.len());
        for name in outputs {
            let value = result.get(*name).ok_or_else(|| {
                Error::Internal(format!("ONNX Runtime: no output {name:?} from {}", self.dir.display()))
            })?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| ort_err(&format!("output {name}"), e))?;
            out.push(OutputTensor {
                name: name.to_string(),
                shape: shape.iter().map(|&d| d as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}
