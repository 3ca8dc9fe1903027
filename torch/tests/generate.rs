//! The generate stage's language model: a GGUF file read into a libtorch Llama decoder.
//!
//! A tiny random model is written as a GGUF file here (float32 matrices, a Q8_0 embedding, a Q4_1 feed-forward
//! matrix), so decoding is checked without the real model: cached decoding equals a full pass, left padding
//! changes nothing, replies do not depend on batching, and a broken file is named. The real SmolLM2 file (from
//! `MODELS=SmolLM2-135M-Instruct make setup`) is checked when it is installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use coltrast::backend::{ChatPrompt, DecodeOptions, TextGenerator};
use coltrast_torch::generate::gguf::Gguf;
use coltrast_torch::generate::llama::Llama;
use coltrast_torch::generate::Generator;
use half::f16;
use tch::{Kind, Tensor};

enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// Quantize to Q8_0 (per block of 32: d = max|x| / 127).
fn q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks(32) {
        let d = b.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|v| if d == 0.0 { 0u8 } else { (v / d).round() as i8 as u8 }));
    }
    out
}

/// Quantize to Q4_1 (per block of 32: min m, scale d = (max − min) / 15).
fn q4_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for b in x.chunks(32) {
        let (lo, hi) = b.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let d = (hi - lo) / 15.0;
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(f16::from_f32(lo).to_le_bytes());
        let q = |v: f32| if d == 0.0 { 0u8 } else { ((v - lo) / d).round().clamp(0.0, 15.0) as u8 };
        out.extend((0..16).map(|j| q(b[j]) | (q(b[j + 16]) << 4)));
    }
    out
}

/// Write a GGUF v3 file: metadata, then tensor infos (`dims` fastest first), then 32-byte-aligned data.
fn write_gguf(path: &Path, meta: &[(&str, Meta)], tensors: &[(String, Vec<u64>, u32, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        put_str(&mut out, k);
        match v {
            Meta::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                put_str(&mut out, s);
            }
            Meta::Strs(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    put_str(&mut out, s);
                }
            }
            Meta::I32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for x in items {
                    out.extend(x.to_le_bytes());
                }
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for (_, _, _, data) in tensors {
        offsets.push(offset);
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    for ((name, dims, kind, _), off) in tensors.iter().zip(&offsets) {
        put_str(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(kind.to_le_bytes());
        out.extend(off.to_le_bytes());
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, _, data) in tensors {
        out.extend(data);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    std::fs::File::create(path).unwrap().write_all(&out).unwrap();
}

/// A 2-layer random Llama (width 32, 4 heads, 2 key/value heads) with a byte-level vocabulary.
fn tiny_model(dir: &Path) -> PathBuf {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    let mut alphabet: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort_unstable();
    tokens.extend(alphabet.iter().map(|c| c.to_string()));
    tokens.push("th".into());
    let mut types = vec![3i32; 3];
    types.extend(std::iter::repeat_n(1, tokens.len() - 3));
    let vocab = tokens.len() as u64;
    let (d, kv, f) = (32u64, 16u64, 64u64);
    tch::manual_seed(7);
    let rand = |n: u64, scale: f64| {
        Vec::<f32>::try_from(Tensor::randn([n as i64], (Kind::Float, tch::Device::Cpu)) * scale).unwrap()
    };
    let f32_bytes = |v: Vec<f32>| v.into_iter().flat_map(f32::to_le_bytes).collect::<Vec<u8>>();
    let mut tensors = vec![("token_embd.weight".to_string(), vec![d, vocab], 8u32, q8_0(&rand(d * vocab, 0.5)))];
    for i in 0..2 {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let ones = f32_bytes(vec![1.0; d as usize]);
        tensors.push((n("attn_norm"), vec![d], 0, ones.clone()));
        tensors.push((n("attn_q"), vec![d, d], 0, f32_bytes(rand(d * d, 0.2))));
        tensors.push((n("attn_k"), vec![d, kv], 0, f32_bytes(rand(d * kv, 0.2))));
        tensors.push((n("attn_v"), vec![d, kv], 0, f32_bytes(rand(d * kv, 0.2))));
        tensors.push((n("attn_output"), vec![d, d], 0, f32_bytes(rand(d * d, 0.2))));
        tensors.push((n("ffn_norm"), vec![d], 0, ones));
        tensors.push((n("ffn_gate"), vec![d, f], 0, f32_bytes(rand(d * f, 0.2))));
        tensors.push((n("ffn_up"), vec![d, f], 3, q4_1(&rand(d * f, 0.2))));
        tensors.push((n("ffn_down"), vec![f, d], 0, f32_bytes(rand(f * d, 0.2))));
    }
    tensors.push(("output_norm.weight".into(), vec![d], 0, f32_bytes(vec![1.0; d as usize])));
    let meta = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("llama.block_count", Meta::U32(2)),
        ("llama.context_length", Meta::U32(256)),
        ("llama.embedding_length", Meta::U32(d as u32)),
        ("llama.feed_forward_length", Meta::U32(f as u32)),
        ("llama.attention.head_count", Meta::U32(4)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.rope.freq_base", Meta::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(vec!["t h".into()])),
        ("tokenizer.ggml.eos_token_id", Meta::U32(2)),
        ("tokenizer.ggml.padding_token_id", Meta::U32(0)),
    ];
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &meta, &tensors);
    path
}

fn ids(v: &[i64]) -> Tensor {
    Tensor::from_slice(v).view([1, -1])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn cached_decoding_equals_a_full_pass() {
    let dir = tempfile::tempdir().unwrap();
    let model = Llama::load(&Gguf::open(&tiny_model(dir.path())).unwrap()).unwrap();
    let seq = [5i64, 80, 33, 100, 7, 61, 12];
    let full =
        model.forward(&ids(&seq), &Tensor::ones([1, 7], (Kind::Int64, tch::Device::Cpu)), &mut model.new_cache());
    let mut cache = model.new_cache();
    let _ = model.forward(&ids(&seq[..4]), &Tensor::ones([1, 4], (Kind::Int64, tch::Device::Cpu)), &mut cache);
    let _ = model.forward(&ids(&seq[4..6]), &Tensor::ones([1, 6], (Kind::Int64, tch::Device::Cpu)), &mut cache);
    let step = model.forward(&ids(&seq[6..]), &Tensor::ones([1, 7], (Kind::Int64, tch::Device::Cpu)), &mut cache);
    assert_eq!(cache.len(), 7);
    assert!(max_abs_diff(&full, &step) < 1e-4, "cached {}", max_abs_diff(&full, &step));
    // and the position matters: the same tokens in another order give other logits
    let mut rev = seq;
    rev.swap(0, 5);
    let other =
        model.forward(&ids(&rev), &Tensor::ones([1, 7], (Kind::Int64, tch::Device::Cpu)), &mut model.new_cache());
    assert!(max_abs_diff(&full, &other) > 1e-3);
}

#[test]
fn left_padding_does_not_change_a_prompts_logits() {
    let dir = tempfile::tempdir().unwrap();
    let model = Llama::load(&Gguf::open(&tiny_model(dir.path())).unwrap()).unwrap();
    let short = [9i64, 40, 41];
    let alone =
        model.forward(&ids(&short), &Tensor::ones([1, 3], (Kind::Int64, tch::Device::Cpu)), &mut model.new_cache());
    let batch = Tensor::from_slice(&[0i64, 0, 9, 40, 41, 3, 4, 5, 6, 7]).view([2, 5]);
    let valid = Tensor::from_slice(&[0i64, 0, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 5]);
    let both = model.forward(&batch, &valid, &mut model.new_cache());
    assert!(max_abs_diff(&alone.get(0), &both.get(0)) < 1e-4, "padded {}", max_abs_diff(&alone.get(0), &both.get(0)));
}

#[test]
fn replies_do_not_depend_on_batching_and_sampling_follows_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let g = Generator::load(&tiny_model(dir.path())).unwrap();
    let prompts: Vec<ChatPrompt> = ["the cat", "a much longer message about the weather", "x"]
        .iter()
        .map(|u| ChatPrompt { system: "You write questions.".into(), user: u.to_string() })
        .collect();
    for temperature in [0.0, 1.0] {
        let opts = |batch, seed| DecodeOptions { max_new_tokens: 12, temperature, seed, batch };
        let one = g.generate(&prompts, &opts(1, 3), &|_| {}).unwrap();
        let three = g.generate(&prompts, &opts(3, 3), &|_| {}).unwrap();
        assert_eq!(one, three, "temperature {temperature}");
        assert!(one.iter().all(|c| c.new_tokens <= 12 && c.prompt_tokens > 10));
        if temperature > 0.0 {
            let other_seed = g.generate(&prompts, &opts(3, 4), &|_| {}).unwrap();
            assert_ne!(one, other_seed, "another seed draws other tokens");
        }
    }
    // truncation counts tokens (the merge "t h" makes "th" one) and keeps whole ones
    assert_eq!(g.truncate("the cat", 2), "the");
    assert_eq!(g.truncate("the cat", 20), "the cat");
}

#[test]
fn a_broken_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_model(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
    let err = Generator::load(&cut).err().expect("a truncated file fails").to_string();
    assert!(err.contains("cut.gguf") && err.contains("beyond the file"), "{err}");
    let not = dir.path().join("not.gguf");
    std::fs::write(&not, b"GGML and then nothing").unwrap();
    let err = Generator::load(&not).err().expect("not a GGUF file").to_string();
    assert!(err.contains("not.gguf"), "{err}");
}

fn smollm2() -> Option<PathBuf> {
    let cache = std::env::var_os("COLTRAST_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/coltrast")))?;
    let p = cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipping: {} is not installed (MODELS=SmolLM2-135M-Instruct make setup)", p.display());
        None
    }
}

#[test]
fn smollm2_answers_a_simple_question() {
    let Some(path) = smollm2() else { return };
    let g = Generator::load(&path).unwrap();
    assert!(g.describe().contains("30 layers"), "{}", g.describe());
    let prompts = vec![
        ChatPrompt { system: "You are a helpful AI assistant.".into(), user: "What is the capital of France?".into() },
        coltrast::stages::generate::llm_prompt(
            "foo",
            "To install foo, run pip install foo. It needs Python 3.9 or later; on older Pythons pip refuses it.",
        ),
    ];
    let opts = DecodeOptions { max_new_tokens: 24, temperature: 0.0, seed: 0, batch: 2 };
    let out = g.generate(&prompts, &opts, &|_| {}).unwrap();
    assert!(out[0].text.contains("Paris"), "{:?}", out[0]);
    // the generate stage's prompt gets a question about the passage
    let q = coltrast::stages::generate::extract_question(&out[1].text).unwrap_or_default().to_lowercase();
    assert!(q.contains("install") || q.contains("python"), "{:?}", out[1]);
}
