//! A tiny random BERT or MPNet (2 layers, hidden 32) written as a real sentence-transformers model dir, and a
//! small dataset, so that the whole pipeline runs in seconds in tests. Pure Rust (the `tokenizers` and
//! `safetensors` crates): no libtorch.
//!
//! One vocabulary ([`vocabulary`]) serves every tiny model: the words of the tiny dataset, the letters and
//! `##` letters (so that any lower-case word has pieces), a few more words, and punctuation. One writer
//! ([`TinyModel`]) writes every tiny model dir: the pipeline tests' BERT and MPNet ([`write_tiny_model`],
//! [`write_tiny_mpnet_model`]: the names, shapes and initialisation of `coltrast_torch::encoder::Encoder::random`
//! with `ModelConfig::tiny` / `tiny_mpnet`, so the tch encoder loads them and gets the same weights as a random
//! encoder of the same seed), and the export tests' BERT with wider weights, a Dense head and a token head.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::Project;

// ---------------------------------------------------------------------------------------------------------
// A tiny dataset

pub const TOPICS: &[(&str, &str, &[&str])] = &[
    (
        "alpha",
        "Alpha",
        &[
            "Alpha detects tumors in chest scans with a residual network.",
            "The scans come from three hospitals and are labelled by radiologists.",
            "Training uses augmented images and a weighted loss.",
            "Alpha reaches high recall on the test hospitals.",
            "The model runs on one GPU in under a second per scan.",
        ],
    ),
    (
        "beta",
        "Beta",
        &[
            "Beta classifies customer reviews as positive or negative.",
            "It fine-tunes a transformer on product reviews from an online store.",
            "Reviews are cleaned and split into sentences first.",
            "Beta reports accuracy and a confusion matrix per category.",
            "A small web service answers requests with the predicted sentiment.",
        ],
    ),
    (
        "gamma",
        "Gamma",
        &[
            "Gamma trades crypto coins with a reinforcement learning agent.",
            "The agent observes prices and order books every minute.",
            "Rewards are profits minus trading fees.",
            "Gamma was backtested on two years of market data.",
            "Risk limits stop the agent when losses grow too large.",
        ],
    ),
];

pub const QA: &[(&str, &str, &str)] = &[
    ("alpha", "What does Alpha detect?", "Tumors in chest scans."),
    ("alpha", "Where do the scans come from?", "Three hospitals."),
    ("alpha", "Which loss does training use?", "A weighted loss."),
    ("alpha", "How fast is the model?", "Under a second per scan."),
    ("beta", "What does Beta classify?", "Customer reviews."),
    ("beta", "Which model does Beta fine-tune?", "A transformer."),
    ("beta", "What does Beta report?", "Accuracy and a confusion matrix."),
    ("beta", "How are requests answered?", "By a small web service."),
    ("gamma", "What does Gamma trade?", "Crypto coins."),
    ("gamma", "What does the agent observe?", "Prices and order books."),
    ("gamma", "What are the rewards?", "Profits minus trading fees."),
    ("gamma", "What stops the agent?", "Risk limits."),
];

pub fn tiny_dataset() -> String {
    let projects: Vec<serde_json::Value> = TOPICS
        .iter()
        .map(|(id, title, sentences)| {
            let qa: Vec<serde_json::Value> = QA
                .iter()
                .filter(|(p, _, _)| p == id)
                .map(|(_, q, a)| serde_json::json!({"question": q, "answer": a, "context": ""}))
                .collect();
            serde_json::json!({
                "project_id": id,
                "readme_content": format!("# {title}\n\n{}", sentences.join(" ")),
                "qa_pairs": qa,
            })
        })
        .collect();
    serde_json::json!({ "projects": projects }).to_string()
}

// ---------------------------------------------------------------------------------------------------------
// One vocabulary and its tokenizers

/// The tiny models' vocabulary (special tokens excluded), sorted: the lower-cased words of [`tiny_dataset`]
/// (its JSON text split at every non-alphanumeric character), `a`..`z` and `##a`..`##z`, a few words of the
/// export tests, and punctuation. Digits and other characters are unknown.
pub fn vocabulary() -> Vec<String> {
    let mut words = BTreeSet::new();
    for w in tiny_dataset().split(|c: char| !c.is_alphanumeric()) {
        if !w.is_empty() {
            words.insert(w.to_lowercase());
        }
    }
    for c in 'a'..='z' {
        words.insert(c.to_string());
        words.insert(format!("##{c}"));
    }
    for w in ["the", "model", "data", "query", "token", "embed", "##ing", "##s", "is", "a"] {
        words.insert(w.to_string());
    }
    for p in [".", "?", ",", "#", ":", "-", "!"] {
        words.insert(p.to_string());
    }
    words.into_iter().collect()
}

/// The architecture of a tiny model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT: `[PAD] [UNK] [CLS] [SEP] [MASK]` are ids 0..5, texts become `[CLS] … [SEP]`, padding id 0.
    Bert,
    /// MPNet: `<s> <pad> </s> <unk> <mask>` are ids 0..5 (`<pad>` is 1, MPNet's padding id), texts become
    /// `<s> … </s>`, relative position bias, no token types.
    MPNet,
}

impl Arch {
    /// The special tokens, in id order.
    pub fn specials(self) -> [&'static str; 5] {
        match self {
            Arch::Bert => ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
            Arch::MPNet => ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        }
    }
    pub fn pad_token_id(self) -> usize {
        match self {
            Arch::Bert => 0,
            Arch::MPNet => 1,
        }
    }
}

/// A WordPiece tokenizer over the special tokens of `arch` (ids 0..5) and then `words` in order (a repeated
/// word keeps its first id). Lower-cases like MiniLM's and MPNet's tokenizers; `truncation` is stored in
/// tokenizer.json (the encoders must override it with their max_seq_length).
pub fn tokenizer(arch: Arch, words: &[String], truncation: Option<usize>) -> Tokenizer {
    let specials = arch.specials();
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for w in specials.iter().map(|s| s.to_string()).chain(words.iter().cloned()) {
        let next = vocab.len() as u32;
        vocab.entry(w).or_insert(next);
    }
    let unk = specials[if arch == Arch::Bert { 1 } else { 3 }];
    let model = WordPiece::builder()
        .vocab(vocab.into_iter().collect::<tokenizers::models::bpe::Vocab>())
        .unk_token(unk.to_string())
        .continuing_subword_prefix("##".to_string())
        .max_input_chars_per_word(100)
        .build()
        .expect("a WordPiece model");
    let mut t = Tokenizer::new(model);
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true))).expect("normalizer");
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    match arch {
        Arch::Bert => t.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), 3), ("[CLS]".into(), 2)))),
        Arch::MPNet => t.with_post_processor(Some(
            RobertaProcessing::new(("</s>".into(), 2), ("<s>".into(), 0)).trim_offsets(true).add_prefix_space(false),
        )),
    };
    t.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    let added: Vec<AddedToken> = specials.iter().map(|s| AddedToken::from(*s, true)).collect();
    t.add_special_tokens(added).expect("special tokens");
    let trunc = truncation.map(|max_length| TruncationParams {
        max_length,
        strategy: TruncationStrategy::LongestFirst,
        stride: 0,
        direction: TruncationDirection::Right,
    });
    t.with_truncation(trunc).expect("truncation");
    t
}

// ---------------------------------------------------------------------------------------------------------
// One writer

pub const HIDDEN: usize = 32;
pub const HEADS: usize = 2;
pub const LAYERS: usize = 2;
pub const INTERMEDIATE: usize = 64;
/// Rows of MPNet's `encoder.relative_attention_bias`.
pub const BUCKETS: usize = 32;
/// Width of the optional Dense head (`2_Dense`).
pub const DENSE: usize = 16;
/// Width of the optional token head (`coltrast_token_head.safetensors`).
pub const TOKEN: usize = 8;

/// [`TinyModel::wide`]'s max_position_embeddings and max_seq_length.
pub const WIDE_MAX_POSITIONS: usize = 32;
pub const WIDE_MAX_SEQ: usize = 24;

/// How the weights are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// transformers' init, exactly as `coltrast_torch::encoder::Encoder::random` does it: every weight matrix
    /// (not LayerNorms), in name order, from normal(0, 0.02) draws of a SplitMix64 seeded by the seed (Box–Muller
    /// in f64), the padding rows zeroed (word embeddings; for MPNet also position embeddings); zero biases, unit
    /// LayerNorms. Heads continue the same draws.
    Transformers,
    /// Wide uniform values ([`Rng`]), so that attention is far from uniform and a wrong op shows in the output:
    /// embeddings in ±1 (words) and ±0.5, linear weights in ±1.5/√fan_in, biases in ±0.1, LayerNorm gains in
    /// 1 ± 0.2 and biases in ±0.1; the Dense and token heads' weights in ±0.3. Drawn in declaration order.
    Wide,
}

/// A tiny sentence-transformers model dir: config.json, tokenizer.json, model.safetensors,
/// sentence_bert_config.json, modules.json, 1_Pooling/config.json; optionally a Dense head (2_Dense/), a token
/// head (coltrast_token_head.safetensors) and coltrast.json.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyModel {
    pub arch: Arch,
    pub init: Init,
    pub seed: u64,
    /// sentence_bert_config.json's max_seq_length.
    pub max_seq_length: usize,
    /// config.json's max_position_embeddings (MPNet's positions start after the padding id: 2 more rows).
    pub max_position_embeddings: usize,
    /// tokenizer.json's stored truncation, if any.
    pub tokenizer_truncation: Option<usize>,
    pub dense: bool,
    pub token_head: bool,
    /// Write coltrast.json (embedding and token widths); implied by `dense` or `token_head`.
    pub coltrast_json: bool,
}

impl TinyModel {
    /// The pipeline tests' BERT: `ModelConfig::tiny` (64 positions), max_seq_length 64, seed 11.
    pub fn bert() -> Self {
        TinyModel {
            arch: Arch::Bert,
            init: Init::Transformers,
            seed: 11,
            max_seq_length: 64,
            max_position_embeddings: 64,
            tokenizer_truncation: None,
            dense: false,
            token_head: false,
            coltrast_json: false,
        }
    }

    /// The pipeline tests' MPNet: `ModelConfig::tiny_mpnet` (66 positions = 64 tokens), max_seq_length 64, seed
    /// 11, laid out as all-mpnet-base-v2's dir.
    pub fn mpnet() -> Self {
        TinyModel { arch: Arch::MPNet, max_position_embeddings: 66, ..Self::bert() }
    }

    /// The export tests' BERT: [`Init::Wide`] weights, [`WIDE_MAX_POSITIONS`] positions, max_seq_length
    /// [`WIDE_MAX_SEQ`], a tokenizer.json that says truncate at 8 (the encoders must override it), optionally a
    /// Dense head and a token head, and always coltrast.json.
    pub fn wide(dense: bool, token_head: bool, seed: u64) -> Self {
        TinyModel {
            init: Init::Wide,
            seed,
            max_seq_length: WIDE_MAX_SEQ,
            max_position_embeddings: WIDE_MAX_POSITIONS,
            tokenizer_truncation: Some(8),
            dense,
            token_head,
            coltrast_json: true,
            ..Self::bert()
        }
    }

    pub fn tokenizer(&self) -> Tokenizer {
        tokenizer(self.arch, &vocabulary(), self.tokenizer_truncation)
    }

    /// Rows of the word embeddings: the tokenizer's vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer().get_vocab_size(true)
    }

    /// config.json: the keys and values `ModelConfig::tiny` / `tiny_mpnet` serialise to, and `architectures`.
    pub fn config_json(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "vocab_size": self.vocab_size(),
            "hidden_size": HIDDEN,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "intermediate_size": INTERMEDIATE,
            "hidden_act": "gelu",
            "max_position_embeddings": self.max_position_embeddings,
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "pad_token_id": self.arch.pad_token_id(),
            "initializer_range": 0.02,
        });
        let extra = match self.arch {
            Arch::Bert => serde_json::json!({"architectures": ["BertModel"], "model_type": "bert",
                "type_vocab_size": 2, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"}),
            Arch::MPNet => serde_json::json!({"architectures": ["MPNetForMaskedLM"], "model_type": "mpnet",
                "relative_attention_num_buckets": BUCKETS, "layer_norm_eps": 1e-5}),
        };
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    /// The encoder's tensors in declaration order: (name, shape, what it is).
    fn layout(&self) -> Vec<(String, Vec<usize>, Role)> {
        let (h, v, p) = (HIDDEN, self.vocab_size(), self.max_position_embeddings);
        let mut t = vec![
            (
                "embeddings.word_embeddings.weight".to_string(),
                vec![v, h],
                Role::Embedding { scale: 1.0, pad_row: true },
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![p, h],
                Role::Embedding { scale: 0.5, pad_row: self.arch == Arch::MPNet },
            ),
        ];
        if self.arch == Arch::Bert {
            let role = Role::Embedding { scale: 0.5, pad_row: false };
            t.push(("embeddings.token_type_embeddings.weight".into(), vec![2, h], role));
        }
        t.push(("embeddings.LayerNorm.weight".into(), vec![h], Role::NormGain));
        t.push(("embeddings.LayerNorm.bias".into(), vec![h], Role::NormBias));
        let (linears, norms): (&[&str; 6], [&str; 2]) = match self.arch {
            Arch::Bert => (
                &[
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                    "attention.output.dense",
                    "intermediate.dense",
                    "output.dense",
                ],
                ["attention.output.LayerNorm", "output.LayerNorm"],
            ),
            Arch::MPNet => (
                &[
                    "attention.attn.q",
                    "attention.attn.k",
                    "attention.attn.v",
                    "attention.attn.o",
                    "intermediate.dense",
                    "output.dense",
                ],
                ["attention.LayerNorm", "output.LayerNorm"],
            ),
        };
        for l in 0..LAYERS {
            for (i, name) in linears.iter().enumerate() {
                let (out, fan_in) = match i {
                    4 => (INTERMEDIATE, h),
                    5 => (h, INTERMEDIATE),
                    _ => (h, h),
                };
                t.push((format!("encoder.layer.{l}.{name}.weight"), vec![out, fan_in], Role::Linear { fan_in }));
                t.push((format!("encoder.layer.{l}.{name}.bias"), vec![out], Role::Bias));
            }
            for name in norms {
                t.push((format!("encoder.layer.{l}.{name}.weight"), vec![h], Role::NormGain));
                t.push((format!("encoder.layer.{l}.{name}.bias"), vec![h], Role::NormBias));
            }
        }
        if self.arch == Arch::MPNet {
            let role = Role::Embedding { scale: 0.5, pad_row: false };
            t.push(("encoder.relative_attention_bias.weight".into(), vec![BUCKETS, HEADS], role));
        }
        t
    }

    /// The encoder's tensors (name, shape, row-major values) and the heads' ([`Self::heads`]), drawn by
    /// [`Self::init`] from [`Self::seed`].
    pub fn tensors(&self) -> (Vec<Tensor>, Heads) {
        let layout = self.layout();
        let pad = self.arch.pad_token_id();
        match self.init {
            Init::Transformers => {
                let mut rng = SplitMix64(self.seed);
                let mut values: HashMap<String, Vec<f32>> = HashMap::new();
                let mut order: Vec<&(String, Vec<usize>, Role)> = layout.iter().collect();
                order.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, shape, role) in order {
                    let n: usize = shape.iter().product();
                    let data = match role {
                        Role::Embedding { pad_row, .. } => {
                            let mut d = rng.normals(n, 0.02);
                            if *pad_row {
                                d[pad * shape[1]..(pad + 1) * shape[1]].fill(0.0);
                            }
                            d
                        }
                        Role::Linear { .. } => rng.normals(n, 0.02),
                        Role::Bias | Role::NormBias => vec![0.0; n],
                        Role::NormGain => vec![1.0; n],
                    };
                    values.insert(name.clone(), data);
                }
                let tensors = layout
                    .into_iter()
                    .map(|(name, shape, _)| {
                        let data = values.remove(&name).unwrap();
                        (name, shape, data)
                    })
                    .collect();
                let heads = self.draw_heads(|n| rng.normals(n, 0.02), |n| vec![0.0; n]);
                (tensors, heads)
            }
            Init::Wide => {
                let mut rng = Rng::new(self.seed);
                let mut tensors = Vec::with_capacity(layout.len());
                for (name, shape, role) in layout {
                    let n: usize = shape.iter().product();
                    let data = match role {
                        Role::Embedding { scale, .. } => rng.vec(n, scale),
                        Role::Linear { fan_in } => rng.vec(n, 1.5 / (fan_in as f32).sqrt()),
                        Role::Bias | Role::NormBias => rng.vec(n, 0.1),
                        Role::NormGain => rng.vec(n, 0.2).into_iter().map(|x| 1.0 + x).collect(),
                    };
                    tensors.push((name, shape, data));
                }
                let rng = std::cell::RefCell::new(rng);
                let heads = self.draw_heads(|n| rng.borrow_mut().vec(n, 0.3), |n| rng.borrow_mut().vec(n, 0.1));
                (tensors, heads)
            }
        }
    }

    fn draw_heads(&self, mut weight: impl FnMut(usize) -> Vec<f32>, mut bias: impl FnMut(usize) -> Vec<f32>) -> Heads {
        let mut heads = Heads::default();
        if self.dense {
            heads.dense = Some((weight(DENSE * HIDDEN), bias(DENSE)));
        }
        if self.token_head {
            heads.token = Some((weight(TOKEN * HIDDEN), bias(TOKEN)));
        }
        heads
    }

    /// Writes the model dir (created if absent; the files are overwritten).
    pub fn write(&self, dir: &Path) {
        let h = HIDDEN;
        write_json(&dir.join("config.json"), &self.config_json());
        std::fs::create_dir_all(dir).unwrap();
        self.tokenizer().save(dir.join("tokenizer.json"), false).unwrap();
        write_json(
            &dir.join("sentence_bert_config.json"),
            &serde_json::json!({"max_seq_length": self.max_seq_length, "do_lower_case": false}),
        );
        write_json(
            &dir.join("1_Pooling/config.json"),
            &serde_json::json!({"word_embedding_dimension": h, "pooling_mode_cls_token": false,
                                "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                                "pooling_mode_mean_sqrt_len_tokens": false}),
        );
        let mut modules = vec![
            ("", "sentence_transformers.models.Transformer".to_string()),
            ("1_Pooling", "sentence_transformers.models.Pooling".to_string()),
        ];
        if self.dense {
            modules.push(("2_Dense", "sentence_transformers.models.Dense".to_string()));
        }
        let normalize = format!("{}_Normalize", modules.len());
        modules.push((normalize.as_str(), "sentence_transformers.models.Normalize".to_string()));
        let modules: Vec<serde_json::Value> = modules
            .iter()
            .enumerate()
            .map(|(i, (path, kind))| serde_json::json!({"idx": i, "name": i.to_string(), "path": path, "type": kind}))
            .collect();
        write_json(&dir.join("modules.json"), &serde_json::Value::Array(modules));

        let (tensors, heads) = self.tensors();
        write_f32(&dir.join("model.safetensors"), &tensors);
        if let Some((w, b)) = heads.dense {
            write_json(
                &dir.join("2_Dense/config.json"),
                &serde_json::json!({"in_features": h, "out_features": DENSE, "bias": true,
                                    "activation_function": "torch.nn.modules.linear.Identity"}),
            );
            let t = [("linear.weight".to_string(), vec![DENSE, h], w), ("linear.bias".to_string(), vec![DENSE], b)];
            write_f32(&dir.join("2_Dense/model.safetensors"), &t);
        }
        if let Some((w, b)) = heads.token {
            let t = [("weight".to_string(), vec![TOKEN, h], w), ("bias".to_string(), vec![TOKEN], b)];
            write_f32(&dir.join("coltrast_token_head.safetensors"), &t);
        }
        if self.coltrast_json || self.dense || self.token_head {
            write_json(
                &dir.join("coltrast.json"),
                &serde_json::json!({
                    "embedding_dim": if self.dense { DENSE } else { h },
                    "token_dim": if self.token_head { TOKEN } else { h }
                }),
            );
        }
    }
}

/// One tensor: name, shape, row-major float32 values.
pub type Tensor = (String, Vec<usize>, Vec<f32>);

/// The optional heads' (weight, bias) values: Dense `[DENSE, HIDDEN]`, token head `[TOKEN, HIDDEN]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Heads {
    pub dense: Option<(Vec<f32>, Vec<f32>)>,
    pub token: Option<(Vec<f32>, Vec<f32>)>,
}

#[derive(Debug, Clone, Copy)]
enum Role {
    Embedding { scale: f32, pad_row: bool },
    Linear { fan_in: usize },
    Bias,
    NormGain,
    NormBias,
}

/// Writes float32 tensors as safetensors (metadata `format: pt`, as torch writes it).
pub fn write_f32(path: &Path, tensors: &[Tensor]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            (name.as_str(), view)
        })
        .collect();
    let meta = Some(HashMap::from([("format".to_string(), "pt".to_string())]));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    safetensors::tensor::serialize_to_file(views, &meta, path).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// The generator of [`Init::Transformers`] (SplitMix64, normals by Box–Muller), as `Encoder::random`'s.
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
    fn normals(&mut self, n: usize, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (self.uniform(), self.uniform());
                ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
            })
            .collect()
    }
}

/// A deterministic generator (xorshift64*) of values in [-scale, scale): [`Init::Wide`]'s, and random inputs of
/// tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40; // 24 bits
        v as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

/// The pipeline tests' tiny random BERT ([`TinyModel::bert`]).
pub fn write_tiny_model(dir: &Path) {
    TinyModel::bert().write(dir);
}

/// The pipeline tests' tiny random MPNet ([`TinyModel::mpnet`]).
pub fn write_tiny_mpnet_model(dir: &Path) {
    TinyModel::mpnet().write(dir);
}

// ---------------------------------------------------------------------------------------------------------
// A project on them

/// A project dir with the tiny dataset and model; `train` is appended to pipeline.toml's [train].
pub fn tiny_project(train: &str) -> Project {
    tiny_project_with(train, write_tiny_model)
}

/// [`tiny_project`] on the tiny random MPNet instead of the tiny BERT.
pub fn tiny_mpnet_project(train: &str) -> Project {
    tiny_project_with(train, write_tiny_mpnet_model)
}

fn tiny_project_with(train: &str, write_model: fn(&Path)) -> Project {
    let p = Project::new(&format!(
        "[model]\nbase = \"tiny-model\"\nthreads = 1\n[ingest]\npath = \"data.json\"\n[chunk]\nmax_tokens = 64\n\
         [train]\ndevice = \"cpu\"\nbatch_size = 2\nteacher = \"none\"\n{train}\n"
    ));
    p.write("data.json", tiny_dataset());
    write_model(&p.path().join("tiny-model"));
    p
}
