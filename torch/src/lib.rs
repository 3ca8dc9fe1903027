//! coltrast-torch: the libtorch half of coltrast. It holds the tch BERT [`encoder`] (chunking and mining embed
//! with it), ColTrast training ([`train`], and the train stage's body in [`train::stage`]), and implements
//! [`coltrast::backend::TorchBackend`] with them. The `coltrast-torch` binary is coltrast's CLI with this
//! backend registered; the `coltrast` binary (no libtorch, so it starts in milliseconds) hands it every run
//! that must execute a libtorch stage.
//!
//! Example:
//! ```no_run
//! coltrast_torch::register();
//! assert!(coltrast::backend::available());
//! ```

use std::path::Path;

use coltrast::backend::{ExportReference, SentenceEncoder, TorchBackend};
use coltrast::embed::Embeddings;
use coltrast::engine::StageContext;
use coltrast::error::{Error, Result};
use coltrast::settings::Settings;

pub mod encoder;
pub mod generate;
pub mod train;

use encoder::{Encoder, EncoderError};

/// Whether this build links libtorch_cuda (the `cuda` feature; see build.rs). Without it libtorch sees no GPU.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Register libtorch as this process's [`coltrast::backend`].
pub fn register() {
    coltrast::backend::register(Box::new(Torch));
}

struct Torch;

impl SentenceEncoder for Encoder {
    fn dim(&self) -> usize {
        Encoder::dim(self)
    }
    fn max_seq_length(&self) -> usize {
        Encoder::max_seq_length(self)
    }
    fn tokenizer(&self) -> &tokenizers::Tokenizer {
        Encoder::tokenizer(self)
    }
    fn embed(&self, texts: &[&str], batch: usize) -> Result<Embeddings> {
        Encoder::embed(self, texts, batch).map_err(Error::from)
    }
}

impl TorchBackend for Torch {
    fn cuda_available(&self) -> bool {
        tch::Cuda::is_available()
    }

    fn cuda_built(&self) -> bool {
        CUDA_BUILT
    }

    fn base_encoder(&self, s: &Settings) -> Result<Box<dyn SentenceEncoder>> {
        if let Some(n) = s.model.threads {
            encoder::set_num_threads(n.get());
        }
        Ok(Box::new(Encoder::load(&s.base_model_dir(), tch::Device::cuda_if_available())?))
    }

    fn train(&self, ctx: &mut StageContext<'_, Settings>) -> Result<()> {
        train::stage::run(ctx)
    }

    fn export_reference(&self, trained: &Path, base: &Path, texts: &[&str]) -> Result<ExportReference> {
        let device = tch::Device::Cpu;
        let (model, _meta) = train::export::load_model_dir(trained, device)?;
        let sentence = train::tensor_rows(&model.embed(texts, 8)?)?;
        let _guard = tch::no_grad_guard();
        let mut tokens = Vec::with_capacity(texts.len());
        for text in texts {
            let batch = model.encoder().batch(&[text])?;
            let n = batch.attention_mask.sum(tch::Kind::Int64).int64_value(&[]);
            let enc = model.encode(&batch, false);
            let rows = enc.tokens.get(0).narrow(0, 0, n).to_device(tch::Device::Cpu).contiguous();
            tokens.push(Vec::<f32>::try_from(rows.view([-1])).map_err(|e| Error::internal(format!("tensor: {e}")))?);
        }
        let base_enc = Encoder::load(base, device)?;
        let base_sentence = base_enc.embed(texts, 8)?.rows().map(|r| r.to_vec()).collect();
        Ok(ExportReference { sentence, tokens, base_sentence })
    }

    fn text_generator(&self, gguf: &Path, s: &Settings) -> Result<Box<dyn coltrast::backend::TextGenerator>> {
        if let Some(n) = s.model.threads {
            encoder::set_num_threads(n.get());
        }
        Ok(Box::new(generate::Generator::load(gguf)?))
    }
}

/// Encoder errors as coltrast errors: the user can fix a missing or incomplete model dir or a bad config file.
impl From<EncoderError> for Error {
    fn from(e: EncoderError) -> Self {
        use EncoderError as E;
        match e {
            E::MissingModelDir { .. }
            | E::NotDownloadable { .. }
            | E::MissingFile { .. }
            | E::Config { .. }
            | E::Unsupported { .. }
            | E::TokenizerLoad { .. }
            | E::Weights { .. } => Error::Usage(e.to_string()),
            E::Io { path, source } => Error::Io { path, source },
            other => Error::Internal(other.to_string()),
        }
    }
}
