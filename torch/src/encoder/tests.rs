//! Unit tests on a tiny random BERT (2 layers, hidden 32, 2 heads): fast, no model files needed.

use super::*;

const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "a", "model", "data", "learning", "is", "of",
    "and", "to", "in", "for", "with", "on", "##s", "##ing", "train", "test", ".", ",", "?",
];

fn tiny(seed: u64, max_seq_length: usize) -> Encoder {
    let tokenizer = toy_tokenizer(WORDS).expect("toy tokenizer");
    let vocab = tokenizer.get_vocab_size(true) as i64;
    Encoder::random(BertConfig::tiny(vocab), tokenizer, max_seq_length, Device::Cpu, seed).expect("tiny encoder")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn texts() -> Vec<&'static str> {
    vec![
        "the quick brown fox jumps over the lazy dog",
        "a model",
        "learning is training of a model with data , and the test is on data .",
        "fox",
        "the dog jumps over the fox ?",
    ]
}

#[test]
fn forward_and_embed_shapes() {
    let enc = tiny(1, 32);
    let batch = enc.batch(&texts()).unwrap();
    let longest = enc.tokenize(&texts()).unwrap().iter().map(|t| t.len()).max().unwrap() as i64;
    assert_eq!(batch.input_ids.size(), vec![5, longest]);
    let hidden = enc.forward(&batch.input_ids, &batch.attention_mask, Some(&batch.token_type_ids), false).unwrap();
    assert_eq!(hidden.size(), vec![5, longest, 32]);
    assert_eq!(mean_pool(&hidden, &batch.attention_mask).size(), vec![5, 32]);

    let emb = enc.embed(&texts(), 2).unwrap();
    assert_eq!((emb.len(), emb.dim, emb.data.len()), (5, 32, 5 * 32));
    let tokens = enc.embed_tokens(&texts(), 2).unwrap();
    let lengths: Vec<usize> = enc.tokenize(&texts()).unwrap().iter().map(|t| t.len()).collect();
    for (t, n) in tokens.iter().zip(lengths) {
        assert_eq!((t.ids.len(), t.dim, t.data.len()), (n, 32, n * 32));
        assert_eq!((t.ids[0], t.ids[n - 1]), (2, 3), "[CLS] ... [SEP]");
    }
}

#[test]
fn embeddings_have_unit_norm() {
    let enc = tiny(2, 32);
    let emb = enc.embed(&texts(), 3).unwrap();
    for row in emb.rows() {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    let zeros = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
    let normalized = to_vec_f32(&l2_normalize(&zeros)).unwrap();
    assert!(normalized.iter().all(|x| *x == 0.0), "zero vector stays zero, no NaN");
}

#[test]
fn mean_pool_ignores_padded_positions() {
    // Garbage in the padded slots must not change the mean.
    let hidden =
        Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 100.0, -100.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]).view([2, 3, 2]);
    let mask = Tensor::from_slice(&[1i64, 1, 0, 1, 1, 1]).view([2, 3]);
    let pooled = to_vec_f32(&mean_pool(&hidden, &mask)).unwrap();
    assert_eq!(pooled, vec![2.0, 3.0, 7.0, 8.0]);
    let empty = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 0]).view([2, 3]);
    assert!(to_vec_f32(&mean_pool(&hidden, &empty)).unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn padded_batch_equals_one_by_one() {
    let enc = tiny(3, 32);
    let batched = enc.embed(&texts(), 8).unwrap();
    let batched_tokens = enc.embed_tokens(&texts(), 8).unwrap();
    for (i, text) in texts().iter().enumerate() {
        let single = enc.embed(&[text], 1).unwrap();
        let diff = max_abs_diff(batched.row(i), single.row(0));
        assert!(diff < 1e-5, "text {i}: batched vs single differ by {diff}");
        let single_tokens = enc.embed_tokens(&[text], 1).unwrap();
        let diff = max_abs_diff(&batched_tokens[i].data, &single_tokens[0].data);
        assert!(diff < 1e-5, "text {i}: token embeddings differ by {diff}");
    }
}

#[test]
fn length_sorted_batches_cover_every_index_longest_first() {
    let lengths = [3, 9, 1, 9, 4, 7, 2];
    let batches = length_sorted_batches(&lengths, 3);
    assert_eq!(batches, vec![vec![1, 3, 5], vec![4, 0, 6], vec![2]]);
    let mut all: Vec<usize> = batches.concat();
    all.sort();
    assert_eq!(all, (0..lengths.len()).collect::<Vec<_>>());
    assert!(length_sorted_batches(&[], 4).is_empty());
}

#[test]
fn embed_returns_rows_in_input_order() {
    let enc = tiny(4, 32);
    let texts = texts();
    // Batch size 2 reorders internally (longest first); each row must still belong to its text.
    let emb = enc.embed(&texts, 2).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let single = enc.embed(&[text], 1).unwrap();
        assert!(max_abs_diff(emb.row(i), single.row(0)) < 1e-5, "row {i} is not {text:?}");
    }
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let emb_rev = enc.embed(&reversed, 2).unwrap();
    for i in 0..texts.len() {
        assert!(max_abs_diff(emb.row(i), emb_rev.row(texts.len() - 1 - i)) < 1e-5);
    }
}

#[test]
fn dropout_only_when_training() {
    let enc = tiny(5, 32);
    let b = enc.batch(&texts()).unwrap();
    let eval1 = enc.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), false).unwrap();
    let eval2 = enc.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), false).unwrap();
    assert!(eval1.equal(&eval2), "train=false must be deterministic");
    let train = enc.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), true).unwrap();
    assert_eq!(train.size(), eval1.size());
    assert!(!train.equal(&eval1), "train=true must apply dropout");
    assert!(train.requires_grad(), "forward tracks gradients for training");
}

#[test]
fn random_init_is_reproducible_per_seed() {
    let a = tiny(7, 32);
    let b = tiny(7, 32);
    let c = tiny(8, 32);
    let name = "encoder.layer.1.attention.self.query.weight";
    let get = |e: &Encoder| e.var_store().variables()[name].shallow_clone();
    assert!(get(&a).equal(&get(&b)));
    assert!(!get(&a).equal(&get(&c)));
    let std = get(&a).std(true).double_value(&[]);
    assert!((std - 0.02).abs() < 0.005, "init std {std}");
    // Names mirror the HF checkpoint keys.
    let names = a.var_store().variables();
    for key in [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.token_type_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "encoder.layer.0.attention.self.key.bias",
        "encoder.layer.0.attention.output.dense.weight",
        "encoder.layer.0.attention.output.LayerNorm.bias",
        "encoder.layer.1.intermediate.dense.weight",
        "encoder.layer.1.output.dense.weight",
        "encoder.layer.1.output.LayerNorm.weight",
    ] {
        assert!(names.contains_key(key), "missing {key}");
    }
    assert_eq!(names.len(), 5 + 16 * 2);
}

#[test]
fn sdpa_attention_matches_explicit_softmax() {
    // BertSelfAttention uses scaled_dot_product_attention; check it equals softmax(QKᵀ/√d + bias)V
    // with the additive mask on padded keys.
    tch::manual_seed(11);
    let (b, h, s, d) = (2, 2, 5, 4);
    let q = Tensor::randn([b, h, s, d], (Kind::Float, Device::Cpu));
    let k = Tensor::randn([b, h, s, d], (Kind::Float, Device::Cpu));
    let v = Tensor::randn([b, h, s, d], (Kind::Float, Device::Cpu));
    let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 0, 1, 1, 1, 1, 1]).view([b, s]);
    let bias = attention_mask_bias(&mask, Kind::Float);
    let fast = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&bias), 0.0, false, None, false);
    let scores = q.matmul(&k.transpose(-1, -2)) / (d as f64).sqrt() + &bias;
    let slow = scores.softmax(-1, Kind::Float).matmul(&v);
    let diff = (&fast - &slow).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "sdpa vs explicit: {diff}");
    // Padded keys get exactly zero weight.
    let weights = (q.matmul(&k.transpose(-1, -2)) + &bias).softmax(-1, Kind::Float);
    assert_eq!(weights.narrow(0, 0, 1).narrow(3, 3, 2).abs().sum(Kind::Float).double_value(&[]), 0.0);
}

#[test]
fn truncates_to_max_seq_length() {
    let enc = tiny(6, 8);
    let long = "the quick brown fox jumps over the lazy dog and the fox";
    let tokens = enc.tokenize(&[long]).unwrap();
    assert_eq!(tokens[0].len(), 8);
    assert_eq!((tokens[0].ids[0], tokens[0].ids[7]), (2, 3));
    assert_eq!(enc.embed(&[long, "a"], 4).unwrap().len(), 2);
}

#[test]
fn edge_cases_are_errors_or_empty_not_panics() {
    let enc = tiny(9, 16);
    assert!(enc.embed(&[], 4).unwrap().is_empty());
    assert!(enc.embed_tokens(&[], 4).unwrap().is_empty());
    assert!(matches!(enc.embed(&["a"], 0), Err(EncoderError::InvalidArgument(_))));
    assert!(matches!(enc.batch(&[]), Err(EncoderError::InvalidArgument(_))));
    let emb = enc.embed(&[""], 1).unwrap();
    assert_eq!(emb.len(), 1, "empty text is [CLS] [SEP]");
    let ids = Tensor::from_slice(&[2i64, 10_000, 3]).view([1, 3]);
    let mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
    let err = enc.forward(&ids, &mask, None, false).unwrap_err();
    assert!(err.to_string().contains("input_ids"), "{err}");
    let long = Tensor::ones([1, 65], (Kind::Int64, Device::Cpu));
    let long_mask = Tensor::ones([1, 65], (Kind::Int64, Device::Cpu));
    assert!(enc.forward(&long, &long_mask, None, false).is_err());
    let short_mask = Tensor::ones([1, 2], (Kind::Int64, Device::Cpu));
    assert!(enc.forward(&ids, &short_mask, None, false).is_err());
}

#[test]
fn config_errors_name_the_field() {
    let good = serde_json::json!({"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64});
    let cfg = BertConfig::from_json_str(&good.to_string()).unwrap();
    assert_eq!((cfg.hidden_act, cfg.layer_norm_eps, cfg.type_vocab_size), (HiddenAct::Gelu, 1e-12, 2));

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("hidden_size");
    let (_, message) = BertConfig::from_json_str(&missing.to_string()).unwrap_err();
    assert!(message.contains("hidden_size"), "{message}");

    let mut bad_act = good.clone();
    bad_act["hidden_act"] = serde_json::json!("swish");
    let (field, _) = BertConfig::from_json_str(&bad_act.to_string()).unwrap_err();
    assert_eq!(field, "hidden_act");

    let mut bad_type = good.clone();
    bad_type["num_hidden_layers"] = serde_json::json!("six");
    let (field, _) = BertConfig::from_json_str(&bad_type.to_string()).unwrap_err();
    assert_eq!(field, "num_hidden_layers");

    let mut bad_heads = good;
    bad_heads["num_attention_heads"] = serde_json::json!(3);
    let (field, _) = BertConfig::from_json_str(&bad_heads.to_string()).unwrap_err();
    assert_eq!(field, "num_attention_heads");
}

#[test]
fn load_errors_name_the_path() {
    let err = Encoder::load(Path::new("sentence-transformers/all-MiniLM-L6-v2"), Device::Cpu).unwrap_err();
    assert!(matches!(err, EncoderError::NotDownloadable { .. }), "{err}");
    assert!(err.to_string().contains("make setup"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = Encoder::load(&missing, Device::Cpu).unwrap_err();
    assert!(matches!(err, EncoderError::MissingModelDir { .. }) && err.to_string().contains("nope"), "{err}");

    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(matches!(err, EncoderError::MissingFile { .. }) && err.to_string().contains("config.json"), "{err}");

    std::fs::write(dir.path().join("config.json"), r#"{"vocab_size": 10, "hidden_size": "big"}"#).unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("config.json") && text.contains("hidden_size"), "{text}");

    let config = serde_json::to_string(&BertConfig::tiny(40)).unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(dir.path().join("1_Pooling/config.json"), r#"{"pooling_mode_cls_token": true}"#).unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(matches!(err, EncoderError::Unsupported { .. }), "{err}");
}

#[test]
fn load_round_trips_saved_weights() {
    // A tiny model saved as safetensors and loaded through Encoder::load gives the same embeddings.
    let enc = tiny(10, 16);
    let dir = tempfile::tempdir().unwrap();
    enc.var_store().save(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(enc.config()).unwrap()).unwrap();
    std::fs::write(dir.path().join("sentence_bert_config.json"), r#"{"max_seq_length": 16}"#).unwrap();
    enc.tokenizer().save(dir.path().join("tokenizer.json"), false).unwrap();
    let loaded = Encoder::load(dir.path(), Device::Cpu).unwrap();
    assert_eq!(loaded.max_seq_length(), 16);
    let a = enc.embed(&texts(), 4).unwrap();
    let b = loaded.embed(&texts(), 4).unwrap();
    assert_eq!(a, b);

    // A checkpoint that does not fit the config is reported by tensor name.
    let mut wider = enc.config().clone();
    wider.intermediate_size = 128;
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&wider).unwrap()).unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("intermediate.dense"), "{err}");
}
