//! Text generation with a small instruction-tuned language model from a GGUF file, in libtorch, in-process:
//! the generate stage's `llm` source writes one search question per chunk with it.
//!
//! **What.** [`Generator::load`] reads a GGUF file ([`gguf`]), builds the Llama decoder ([`llama`]) with every
//! weight dequantized to float32, and the byte-level BPE tokenizer from the file's own vocabulary and merges
//! (`tokenizer.ggml.*`). [`Generator::generate`] applies the ChatML template SmolLM2 was tuned with
//! (`<|im_start|>role\n…<|im_end|>\n`), decodes greedily (or with seeded sampling) with a key/value cache, and
//! stops at `<|im_end|>` / end of text. Prompts are sorted by length and batched, left-padded.
//!
//! **Reproducible.** Greedy decoding is deterministic; with a temperature, each prompt's draw at each step comes
//! from a blake3 hash of (seed, prompt text, step), so a reply depends neither on batching nor on threads.
//!
//! **Example.**
//! ```no_run
//! use coltrast::backend::{ChatPrompt, DecodeOptions, TextGenerator};
//! let g = coltrast_torch::generate::Generator::load(std::path::Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"))?;
//! let p = ChatPrompt { system: "You are a helpful AI assistant.".into(), user: "Name a colour.".into() };
//! let opts = DecodeOptions { max_new_tokens: 16, temperature: 0.0, seed: 0, batch: 1 };
//! println!("{}", g.generate(&[p], &opts, &|_| {})?[0].text);
//! # Ok::<(), coltrast::Error>(())
//! ```

pub mod gguf;
pub mod llama;

use std::path::Path;

use coltrast::backend::{ChatPrompt, Completion, DecodeOptions, TextGenerator};
use coltrast::error::{Error, Result};
use coltrast::hash::StableHasher;
use tch::{Kind, Tensor};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use gguf::{Gguf, GgufError};
use llama::Llama;

impl From<GgufError> for Error {
    fn from(e: GgufError) -> Self {
        match e {
            GgufError::Io { path, source } => Error::Io { path, source },
            other => Error::Usage(other.to_string()),
        }
    }
}

/// A loaded language model and its tokenizer.
pub struct Generator {
    name: String,
    model: Llama,
    tokenizer: Tokenizer,
    /// Tokens that end a reply.
    stop: Vec<u32>,
    pad: u32,
}

/// The byte-level BPE tokenizer of a GGUF file (`tokenizer.ggml.model = "gpt2"`), with its control tokens
/// (`token_type` 3) as special tokens, digits split one by one as SmolLM2's own tokenizer does.
fn tokenizer_from_gguf(g: &Gguf) -> std::result::Result<Tokenizer, Error> {
    let model = g.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::Usage(format!(
            "{}: metadata key `tokenizer.ggml.model`: `{model}` is not supported (only byte-level BPE, `gpt2`)",
            g.path().display()
        )));
    }
    let tokens = g.strings("tokenizer.ggml.tokens")?;
    let merges = g.strings("tokenizer.ggml.merges")?;
    let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let (a, b) = m.split_once(' ').ok_or_else(|| {
            Error::Usage(format!(
                "{}: metadata key `tokenizer.ggml.merges`: entry {i} `{m}` is not `a b`",
                g.path().display()
            ))
        })?;
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| Error::Usage(format!("{}: tokenizer: {e}", g.path().display())))?;
    let mut tok = Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = match g.get("tokenizer.ggml.token_type") {
        Some(gguf::Value::Ints(types)) => {
            tokens.iter().zip(types).filter(|(_, &t)| t == 3).map(|(s, _)| AddedToken::from(s.clone(), true)).collect()
        }
        _ => vec![],
    };
    tok.add_special_tokens(specials).map_err(|e| Error::Usage(format!("{}: tokenizer: {e}", g.path().display())))?;
    Ok(tok)
}

impl Generator {
    /// Load a GGUF language model (architecture `llama`, tokenizer `gpt2`).
    pub fn load(path: &Path) -> Result<Self> {
        let g = Gguf::open(path)?;
        let model = Llama::load(&g)?;
        let tokenizer = tokenizer_from_gguf(&g)?;
        let id = |key: &str| match g.get(key) {
            Some(gguf::Value::Int(i)) => Some(*i as u32),
            _ => None,
        };
        let mut stop: Vec<u32> = [
            id("tokenizer.ggml.eos_token_id"),
            tokenizer.token_to_id("<|im_end|>"),
            tokenizer.token_to_id("<|endoftext|>"),
        ]
        .into_iter()
        .flatten()
        .collect();
        stop.sort_unstable();
        stop.dedup();
        let pad = id("tokenizer.ggml.padding_token_id").or(stop.first().copied()).unwrap_or(0);
        let c = model.config();
        let name = format!(
            "{} ({} layers, width {}, {} heads / {} key-value heads, vocab {})",
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            c.n_layer,
            c.dim,
            c.n_head,
            c.n_kv_head,
            c.vocab
        );
        Ok(Generator { name, model, tokenizer, stop, pad })
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::internal(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(|e| Error::internal(format!("tokenizer: {e}")))
    }

    /// The ChatML text of one turn, ready for the assistant's reply.
    pub fn chat_text(p: &ChatPrompt) -> String {
        format!(
            "<|im_start|>system\n{}<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n",
            p.system, p.user
        )
    }

    /// Continue token sequences: one batch, left-padded. Returns the new tokens of each (stop token excluded).
    pub fn continue_batch(&self, prompts: &[Vec<u32>], keys: &[String], opts: &DecodeOptions) -> Vec<Vec<u32>> {
        let b = prompts.len() as i64;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(prompts.len() * longest);
        let mut valid = Vec::with_capacity(prompts.len() * longest);
        for p in prompts {
            let pad = longest - p.len();
            ids.extend(std::iter::repeat_n(self.pad as i64, pad).chain(p.iter().map(|&t| t as i64)));
            valid.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1i64, p.len())));
        }
        let tokens = Tensor::from_slice(&ids).view([b, longest as i64]);
        let mut valid = Tensor::from_slice(&valid).view([b, longest as i64]);
        let mut cache = self.model.new_cache();
        let mut logits = self.model.forward(&tokens, &valid, &mut cache);
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
        let mut done = vec![false; prompts.len()];
        for step in 0..opts.max_new_tokens {
            let next = self.pick(&logits, keys, step, opts);
            for (i, &t) in next.iter().enumerate() {
                if done[i] {
                    continue;
                }
                if self.stop.contains(&t) {
                    done[i] = true;
                } else {
                    out[i].push(t);
                }
            }
            if done.iter().all(|&d| d) || step + 1 == opts.max_new_tokens {
                break;
            }
            let feed: Vec<i64> = next.iter().map(|&t| t as i64).collect();
            valid = Tensor::cat(&[valid, Tensor::ones([b, 1], (Kind::Int64, tch::Device::Cpu))], 1);
            logits = self.model.forward(&Tensor::from_slice(&feed).view([b, 1]), &valid, &mut cache);
        }
        out
    }

    /// The next token of each row: argmax, or a seeded draw from softmax(logits / temperature).
    fn pick(&self, logits: &Tensor, keys: &[String], step: usize, opts: &DecodeOptions) -> Vec<u32> {
        if opts.temperature <= 0.0 {
            let am = logits.argmax(-1, false);
            return Vec::<i64>::try_from(&am).unwrap_or_default().into_iter().map(|t| t as u32).collect();
        }
        let probs = (logits / opts.temperature as f64).softmax(-1, Kind::Float);
        let rows = probs.size()[0];
        (0..rows)
            .map(|i| {
                let p = Vec::<f32>::try_from(&probs.get(i)).unwrap_or_default();
                let mut h = StableHasher::new("coltrast-llm-sample");
                h.u64(opts.seed).str(&keys[i as usize]).u64(step as u64);
                let u = h.unit() as f32;
                let mut acc = 0.0f32;
                for (t, &pt) in p.iter().enumerate() {
                    acc += pt;
                    if u < acc {
                        return t as u32;
                    }
                }
                (p.len() - 1) as u32
            })
            .collect()
    }
}

impl TextGenerator for Generator {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn truncate(&self, text: &str, max_tokens: usize) -> String {
        match self.encode(text) {
            Ok(ids) if ids.len() > max_tokens => self.decode(&ids[..max_tokens]).unwrap_or_else(|_| text.to_string()),
            _ => text.to_string(),
        }
    }

    fn generate(
        &self,
        prompts: &[ChatPrompt],
        opts: &DecodeOptions,
        progress: &dyn Fn(usize),
    ) -> Result<Vec<Completion>> {
        let texts: Vec<String> = prompts.iter().map(Self::chat_text).collect();
        let encoded: Vec<Vec<u32>> = texts.iter().map(|t| self.encode(t)).collect::<Result<_>>()?;
        let context = self.model.config().context as usize;
        for (i, e) in encoded.iter().enumerate() {
            if e.len() + opts.max_new_tokens > context {
                return Err(Error::Usage(format!(
                    "prompt {i}: {} tokens + {} new exceed the model's context of {context}",
                    e.len(),
                    opts.max_new_tokens
                )));
            }
        }
        // similar lengths together: less padding
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by_key(|&i| (encoded[i].len(), i));
        let mut replies: Vec<Option<Completion>> = vec![None; prompts.len()];
        let mut finished = 0;
        for group in order.chunks(opts.batch.max(1)) {
            let batch: Vec<Vec<u32>> = group.iter().map(|&i| encoded[i].clone()).collect();
            let keys: Vec<String> = group.iter().map(|&i| texts[i].clone()).collect();
            let new = self.continue_batch(&batch, &keys, opts);
            for (&i, toks) in group.iter().zip(new) {
                let text = self.decode(&toks)?;
                replies[i] = Some(Completion { text, prompt_tokens: encoded[i].len(), new_tokens: toks.len() });
            }
            finished += group.len();
            progress(finished);
        }
        Ok(replies.into_iter().map(|r| r.expect("every prompt is in one group")).collect())
    }
}
