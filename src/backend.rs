//! The libtorch seam: what the chunk, generate, mine, train and export stages need from libtorch, as a trait that the
//! `coltrast-torch` crate implements and registers.
//!
//! What: libtorch's static initialisers cost about 0.35 s at every process start, so the `coltrast` binary does
//! not link it. Everything that needs no libtorch (fingerprints, cached reruns, index, eval, the query
//! commands, report) runs in `coltrast` itself. When a run must execute a libtorch stage, `coltrast` hands the
//! whole command to the `coltrast-torch` binary next to it ([`exec_torch_binary`]), which is the same CLI with
//! a [`TorchBackend`] registered. The engine decides this before it touches anything
//! ([`crate::engine::Stage::available`]), so a handed-over run starts clean.
//!
//! Inputs: a backend, registered once per process ([`register`]).
//! Outputs: [`backend`] (or [`Error::NeedsTorch`] in a process without one), [`resolve_auto_cuda`].
//!
//! Example:
//! ```
//! // In the coltrast binary no backend is registered.
//! assert!(!coltrast::backend::available());
//! assert!(matches!(coltrast::backend::backend(), Err(coltrast::Error::NeedsTorch(_))));
//! ```

use std::path::Path;
use std::sync::OnceLock;

use crate::embed::Embeddings;
use crate::engine::StageContext;
use crate::error::{Error, Result};
use crate::settings::Settings;

/// File name of the libtorch binary, looked up next to the running executable.
pub const TORCH_BINARY: &str = "coltrast-torch";

/// A sentence encoder (the base model in libtorch), as chunk and mine use it.
pub trait SentenceEncoder {
    /// Width of the embeddings.
    fn dim(&self) -> usize;
    /// Longest input in tokens, [CLS] and [SEP] included.
    fn max_seq_length(&self) -> usize;
    /// The model's tokenizer (for token counts).
    fn tokenizer(&self) -> &tokenizers::Tokenizer;
    /// L2-normalised sentence embeddings in input order, `batch` texts per forward pass.
    fn embed(&self, texts: &[&str], batch: usize) -> Result<Embeddings>;
}

/// libtorch's reference vectors for the export stage's parity check.
#[derive(Debug, Clone, Default)]
pub struct ExportReference {
    /// The fine-tuned model's sentence embedding of each text.
    pub sentence: Vec<Vec<f32>>,
    /// The fine-tuned model's token embeddings of each text: `n_tokens × token_dim`, row-major, real tokens only.
    pub tokens: Vec<Vec<f32>>,
    /// The base model's sentence embedding of each text.
    pub base_sentence: Vec<Vec<f32>>,
}

/// One chat turn for a [`TextGenerator`]: the system message and the user's message.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPrompt {
    pub system: String,
    pub user: String,
}

/// How a [`TextGenerator`] decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// Most tokens written per reply.
    pub max_new_tokens: usize,
    /// 0: greedy (argmax). Above 0: sampling at this temperature with a seeded draw per prompt and step, so a
    /// reply depends on `seed`, its prompt and its index, never on batching or threads.
    pub temperature: f32,
    pub seed: u64,
    /// Prompts per forward pass (speed only).
    pub batch: usize,
}

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: usize,
    pub new_tokens: usize,
}

/// A small instruction-tuned language model, as the generate stage's `llm` source uses it.
pub trait TextGenerator {
    /// What was loaded, for logs (file name, layers, width).
    fn describe(&self) -> String;
    /// `text` cut to at most `max_tokens` of the model's tokens (whole tokens, decoded back to text).
    fn truncate(&self, text: &str, max_tokens: usize) -> String;
    /// One reply per prompt, in input order, with the model's chat template applied; `progress` is told how
    /// many prompts were finished after each batch.
    fn generate(
        &self,
        prompts: &[ChatPrompt],
        opts: &DecodeOptions,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Completion>>;
}

/// What only libtorch can do.
pub trait TorchBackend: Send + Sync {
    /// Whether libtorch sees a CUDA device (resolves `train.device = "auto"`).
    fn cuda_available(&self) -> bool;
    /// Whether this build links libtorch_cuda (coltrast-torch's `cuda` feature, `make build GPU=1`). Without
    /// it libtorch never sees a GPU.
    fn cuda_built(&self) -> bool;
    /// The base model of the settings as a sentence encoder (threads from `model.threads`).
    fn base_encoder(&self, s: &Settings) -> Result<Box<dyn SentenceEncoder>>;
    /// The train stage's body.
    fn train(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()>;
    /// Reference vectors of `texts` for a trained model dir and the base model dir.
    fn export_reference(&self, trained: &Path, base: &Path, texts: &[&str]) -> Result<ExportReference>;
    /// A language model from a GGUF file (threads from `model.threads`).
    fn text_generator(&self, gguf: &Path, s: &Settings) -> Result<Box<dyn TextGenerator>>;
}

static BACKEND: OnceLock<Box<dyn TorchBackend>> = OnceLock::new();

/// Register the process's backend (the coltrast-torch binary does, first thing). Later calls are ignored.
pub fn register(b: Box<dyn TorchBackend>) {
    let _ = BACKEND.set(b);
}

pub fn available() -> bool {
    BACKEND.get().is_some()
}

pub fn backend() -> Result<&'static dyn TorchBackend> {
    BACKEND
        .get()
        .map(|b| b.as_ref())
        .ok_or_else(|| Error::NeedsTorch(format!("this needs libtorch, which only the {TORCH_BINARY} binary links")))
}

/// Whether `train.device = "auto"` means CUDA. With a backend, libtorch answers. Without one the answer is
/// known only when no NVIDIA driver is loaded (then libtorch can see no GPU either); otherwise
/// [`Error::NeedsTorch`], and the run goes to coltrast-torch.
pub fn resolve_auto_cuda() -> Result<bool> {
    if let Some(b) = BACKEND.get() {
        return Ok(b.cuda_available());
    }
    let driver = Path::new("/proc/driver/nvidia/version").exists() || Path::new("/dev/nvidia0").exists();
    if driver {
        Err(Error::NeedsTorch("train.device = \"auto\": only libtorch can tell whether it sees the GPU".into()))
    } else {
        Ok(false)
    }
}

/// Replace this process with coltrast-torch and the same arguments. The binary is `$COLTRAST_TORCH_BIN` when
/// set, else the one next to the current executable. Returns only on failure.
pub fn exec_torch_binary() -> Error {
    use std::os::unix::process::CommandExt;
    let torch = match std::env::var_os("COLTRAST_TORCH_BIN") {
        Some(p) => std::path::PathBuf::from(p),
        None => match std::env::current_exe() {
            Ok(p) => p.with_file_name(TORCH_BINARY),
            Err(e) => return Error::internal(format!("cannot find the running executable: {e}")),
        },
    };
    if !torch.is_file() {
        return Error::Usage(format!(
            "{}: missing; this run trains or embeds with libtorch, which {TORCH_BINARY} does (run `make build`)",
            torch.display()
        ));
    }
    let err = std::process::Command::new(&torch).args(std::env::args_os().skip(1)).exec();
    Error::internal(format!("{}: cannot start: {err}", torch.display()))
}

/// The base model as an external input: its files' content is part of the fingerprint.
pub fn base_model_input(s: &crate::settings::Settings) -> crate::engine::ExternalInput {
    crate::engine::ExternalInput { name: "base_model".into(), path: s.base_model_dir() }
}

/// Load the base model named by the settings in libtorch (see [`crate::backend`]), with a clear error when it
/// is missing.
pub fn load_base_encoder(s: &crate::settings::Settings) -> Result<Box<dyn SentenceEncoder>> {
    backend()?.base_encoder(s)
}

/// What `train.device` resolves to on this machine: `"cpu"` or `"cuda"` (hashed into the fingerprint, since CPU
/// and GPU runs give different bytes). `"auto"` needs libtorch's answer where an NVIDIA driver is loaded.
pub fn resolved_device(d: crate::settings::TrainDevice) -> Result<&'static str> {
    Ok(match d {
        crate::settings::TrainDevice::Cpu => "cpu",
        crate::settings::TrainDevice::Cuda => "cuda",
        crate::settings::TrainDevice::Auto => {
            if resolve_auto_cuda()? {
                "cuda"
            } else {
                "cpu"
            }
        }
    })
}

/// Whether `train.device` can work on this machine and build: `Ok` for `"cpu"` and `"auto"` always; for
/// `"cuda"` an error whose one line says which is missing, the CUDA build or the GPU.
pub fn check_device(d: crate::settings::TrainDevice, cuda_built: bool, cuda_available: bool) -> Result<()> {
    match d {
        crate::settings::TrainDevice::Cuda if !cuda_built => Err(crate::error::Error::Usage(
            "train.device = \"cuda\": this coltrast-torch was built without CUDA (run `make setup GPU=1` and \
             `make build GPU=1`), or set train.device = \"auto\" or \"cpu\""
                .into(),
        )),
        crate::settings::TrainDevice::Cuda if !cuda_available => Err(crate::error::Error::Usage(
            "train.device = \"cuda\": libtorch sees no CUDA device on this machine (no NVIDIA GPU or driver); set \
             train.device = \"auto\" or \"cpu\""
                .into(),
        )),
        _ => Ok(()),
    }
}

/// The line a run logs for the device `train.device` resolved to, and why.
pub fn device_choice(d: crate::settings::TrainDevice, cuda_built: bool, cuda_available: bool) -> String {
    let why = match (d, cuda_built, cuda_available) {
        (crate::settings::TrainDevice::Cpu, ..) => "train.device = \"cpu\"",
        (crate::settings::TrainDevice::Cuda, ..) => "train.device = \"cuda\"",
        (crate::settings::TrainDevice::Auto, false, _) => {
            "train.device = \"auto\"; this build has no CUDA (make build GPU=1)"
        }
        (crate::settings::TrainDevice::Auto, true, false) => "train.device = \"auto\"; libtorch sees no CUDA device",
        (crate::settings::TrainDevice::Auto, true, true) => "train.device = \"auto\"; libtorch sees a CUDA device",
    };
    let on = match (d, cuda_available) {
        (crate::settings::TrainDevice::Cpu, _) | (crate::settings::TrainDevice::Auto, false) => "cpu",
        _ => "cuda:0",
    };
    format!("train: on {on} ({why})")
}
