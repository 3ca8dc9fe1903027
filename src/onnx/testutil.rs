//! Test helpers shared by the onnx and embed tests: locating the installed runtime, base model and
//! fixture (skipping with a message when absent) and writing a tiny random BERT model directory.

use std::path::{Path, PathBuf};

use super::safetensors::write_f32;

/// libonnxruntime.so as `make setup` installs it, or None (with a message) when absent.
pub fn ort_lib(test: &str) -> Option<PathBuf> {
    let p = crate::settings::Settings::default().ort_library_path();
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no ONNX Runtime library at {} (run `make setup`)", p.display());
        None
    }
}

/// libopenvino_c.so as `make setup` installs it, or None (with a message).
pub fn openvino_lib(test: &str) -> Option<PathBuf> {
    let p = crate::settings::Settings::default().openvino_library_path();
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no OpenVINO runtime at {} (run `make setup`)", p.display());
        None
    }
}

/// The base MiniLM directory as `make setup` installs it, or None (with a message).
pub fn minilm_dir(test: &str) -> Option<PathBuf> {
    let p = crate::settings::cache_dir().join("models").join("all-MiniLM-L6-v2");
    if p.join("model.safetensors").is_file() && p.join("tokenizer.json").is_file() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no base model at {} (run `make setup`)", p.display());
        None
    }
}

/// all-mpnet-base-v2 as `make setup MODELS="all-MiniLM-L6-v2 all-mpnet-base-v2"` installs it, or None (with a
/// message).
pub fn mpnet_dir(test: &str) -> Option<PathBuf> {
    let p = crate::settings::cache_dir().join("models").join("all-mpnet-base-v2");
    if p.join("model.safetensors").is_file() && p.join("tokenizer.json").is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIP {test}: no all-mpnet-base-v2 at {} (make setup MODELS=\"all-MiniLM-L6-v2 all-mpnet-base-v2\")",
            p.display()
        );
        None
    }
}

/// The sentence-transformers reference numbers for MiniLM (../shared/fixtures), or None (with a message).
pub fn fixture(test: &str) -> Option<serde_json::Value> {
    fixture_named(test, "minilm_reference.json")
}

/// `../shared/fixtures/<name>`, or None (with a message).
pub fn fixture_named(test: &str, name: &str) -> Option<serde_json::Value> {
    let p = format!("{}/../shared/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    match std::fs::read_to_string(&p) {
        Ok(t) => Some(serde_json::from_str(&t).expect("fixture is JSON")),
        Err(_) => {
            eprintln!("SKIP {test}: fixture {p} is absent");
            None
        }
    }
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

/// A deterministic generator (xorshift64*) of values in [-scale, scale).
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

pub const TINY_HIDDEN: usize = 32;
pub const TINY_HEADS: usize = 2;
pub const TINY_LAYERS: usize = 2;
pub const TINY_INTER: usize = 64;
pub const TINY_MAX_POS: usize = 32;
pub const TINY_MAX_SEQ: usize = 24;
pub const TINY_DENSE: usize = 16;
pub const TINY_TOKEN: usize = 8;

/// A small WordPiece vocabulary: specials, letters, continuation letters, a few words.
fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
    for c in 'a'..='z' {
        v.push(c.to_string());
    }
    for c in 'a'..='z' {
        v.push(format!("##{c}"));
    }
    for w in ["the", "model", "data", "query", "token", "embed", "##ing", "##s", "is", "a", ".", ",", "?", "!"] {
        v.push(w.to_string());
    }
    v
}

fn tiny_tokenizer_json(vocab: &[String]) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, t)| (t.clone(), serde_json::json!(i))).collect();
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap();
    let special = |t: &str| {
        serde_json::json!({"id": id(t), "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    let added: Vec<serde_json::Value> =
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|t| special(t)).collect();
    serde_json::json!({
        "version": "1.0",
        "truncation": {"max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": added,
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": map}
    })
}

fn write_json(path: &Path, v: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string_pretty(v).unwrap()).unwrap();
}

/// Write a randomly initialised 2-layer BERT (hidden 32, 2 heads, intermediate 64) as a
/// sentence-transformers directory, optionally with a Dense head (16) and a token head (8). Its
/// tokenizer.json says truncate at 8 (the encoder must override that with max_seq_length 24).
pub fn write_tiny_model(dir: &Path, dense: bool, token_head: bool, seed: u64) {
    let vocab = tiny_vocab();
    let v = vocab.len();
    let h = TINY_HIDDEN;
    let mut rng = Rng::new(seed);
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({
            "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
            "hidden_size": h, "num_attention_heads": TINY_HEADS, "num_hidden_layers": TINY_LAYERS,
            "intermediate_size": TINY_INTER, "max_position_embeddings": TINY_MAX_POS, "type_vocab_size": 2,
            "vocab_size": v, "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"
        }),
    );
    write_json(
        &dir.join("sentence_bert_config.json"),
        &serde_json::json!({"max_seq_length": TINY_MAX_SEQ, "do_lower_case": false}),
    );
    write_json(
        &dir.join("1_Pooling/config.json"),
        &serde_json::json!({"word_embedding_dimension": h, "pooling_mode_cls_token": false,
                            "pooling_mode_mean_tokens": true, "pooling_mode_max_tokens": false,
                            "pooling_mode_mean_sqrt_len_tokens": false}),
    );
    let mut modules = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if dense {
        modules.push(
            serde_json::json!({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}),
        );
    }
    modules.push(serde_json::json!({"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}));
    write_json(&dir.join("modules.json"), &serde_json::Value::Array(modules));
    write_json(&dir.join("tokenizer.json"), &tiny_tokenizer_json(&vocab));

    // BERT weights: N(0, ~0.3)-ish uniform values; LayerNorm gains around 1.
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>, data: Vec<f32>| tensors.push((name, shape, data));
    push("embeddings.word_embeddings.weight".into(), vec![v, h], rng.vec(v * h, 1.0));
    push("embeddings.position_embeddings.weight".into(), vec![TINY_MAX_POS, h], rng.vec(TINY_MAX_POS * h, 0.5));
    push("embeddings.token_type_embeddings.weight".into(), vec![2, h], rng.vec(2 * h, 0.5));
    let ln = |rng: &mut Rng| -> (Vec<f32>, Vec<f32>) {
        (rng.vec(h, 0.2).into_iter().map(|x| 1.0 + x).collect(), rng.vec(h, 0.1))
    };
    let (g, b) = ln(&mut rng);
    push("embeddings.LayerNorm.weight".into(), vec![h], g);
    push("embeddings.LayerNorm.bias".into(), vec![h], b);
    for l in 0..TINY_LAYERS {
        let p = format!("encoder.layer.{l}");
        for (name, o, i) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", TINY_INTER, h),
            ("output.dense", h, TINY_INTER),
        ] {
            let scale = 1.5 / (i as f32).sqrt();
            push(format!("{p}.{name}.weight"), vec![o, i], rng.vec(o * i, scale));
            push(format!("{p}.{name}.bias"), vec![o], rng.vec(o, 0.1));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            let (g, b) = ln(&mut rng);
            push(format!("{p}.{name}.weight"), vec![h], g);
            push(format!("{p}.{name}.bias"), vec![h], b);
        }
    }
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    write_f32(&dir.join("model.safetensors"), &refs).unwrap();

    if dense {
        write_json(
            &dir.join("2_Dense/config.json"),
            &serde_json::json!({"in_features": h, "out_features": TINY_DENSE, "bias": true,
                                "activation_function": "torch.nn.modules.linear.Identity"}),
        );
        let w = rng.vec(TINY_DENSE * h, 0.3);
        let b = rng.vec(TINY_DENSE, 0.1);
        write_f32(
            &dir.join("2_Dense/model.safetensors"),
            &[("linear.weight", &[TINY_DENSE, h], &w), ("linear.bias", &[TINY_DENSE], &b)],
        )
        .unwrap();
    }
    if token_head {
        let w = rng.vec(TINY_TOKEN * h, 0.3);
        let b = rng.vec(TINY_TOKEN, 0.1);
        write_f32(
            &dir.join("coltrast_token_head.safetensors"),
            &[("weight", &[TINY_TOKEN, h], &w), ("bias", &[TINY_TOKEN], &b)],
        )
        .unwrap();
    }
    write_json(
        &dir.join("coltrast.json"),
        &serde_json::json!({
            "embedding_dim": if dense { TINY_DENSE } else { h },
            "token_dim": if token_head { TINY_TOKEN } else { h }
        }),
    );
}
