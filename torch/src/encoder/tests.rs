//! Unit tests on a tiny random BERT and a tiny random MPNet (2 layers, hidden 32, 2 heads): fast, no model
//! files needed.

use super::*;
use tch::nn;

const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "a", "model", "data", "learning", "is", "of",
    "and", "to", "in", "for", "with", "on", "##s", "##ing", "train", "test", ".", ",", "?",
];

fn tiny(seed: u64, max_seq_length: usize) -> Encoder {
    let tokenizer = toy_tokenizer(WORDS).expect("toy tokenizer");
    let vocab = tokenizer.get_vocab_size(true) as i64;
    Encoder::random(ModelConfig::tiny(vocab), tokenizer, max_seq_length, Device::Cpu, seed).expect("tiny encoder")
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

/// Padding never changes a text's sentence or token embeddings (any architecture).
fn assert_padded_batch_equals_one_by_one(enc: &Encoder) -> Embeddings {
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
    batched
}

#[test]
fn padded_batch_equals_one_by_one() {
    assert_padded_batch_equals_one_by_one(&tiny(3, 32));
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
    let good = serde_json::json!({"model_type": "bert", "vocab_size": 100, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64});
    let cfg = ModelConfig::from_json_str(&good.to_string()).unwrap();
    assert_eq!((cfg.hidden_act, cfg.layer_norm_eps, cfg.pad_token_id), (HiddenAct::Gelu, 1e-12, 0));
    assert_eq!(cfg.arch, Architecture::Bert { type_vocab_size: 2 });

    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("hidden_size");
    let (_, message) = ModelConfig::from_json_str(&missing.to_string()).unwrap_err();
    assert!(message.contains("hidden_size"), "{message}");

    let mut bad_act = good.clone();
    bad_act["hidden_act"] = serde_json::json!("swish");
    let (field, _) = ModelConfig::from_json_str(&bad_act.to_string()).unwrap_err();
    assert_eq!(field, "hidden_act");

    let mut bad_type = good.clone();
    bad_type["num_hidden_layers"] = serde_json::json!("six");
    let (field, _) = ModelConfig::from_json_str(&bad_type.to_string()).unwrap_err();
    assert_eq!(field, "num_hidden_layers");

    let mut bad_heads = good;
    bad_heads["num_attention_heads"] = serde_json::json!(3);
    let (field, _) = ModelConfig::from_json_str(&bad_heads.to_string()).unwrap_err();
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

    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "bert", "vocab_size": 10, "hidden_size": "big"}"#)
        .unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("config.json") && text.contains("hidden_size"), "{text}");

    let config = serde_json::to_string(&ModelConfig::tiny(40)).unwrap();
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

// ---------------------------------------------------------------------------------------------------------
// Config dispatch and MPNet

/// all-mpnet-base-v2's config.json, as installed by `make setup MODELS=...`.
const MPNET_CONFIG: &str = r#"{
  "_name_or_path": "microsoft/mpnet-base", "architectures": ["MPNetForMaskedLM"],
  "attention_probs_dropout_prob": 0.1, "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
  "layer_norm_eps": 1e-05, "max_position_embeddings": 514, "model_type": "mpnet", "num_attention_heads": 12,
  "num_hidden_layers": 12, "pad_token_id": 1, "relative_attention_num_buckets": 32,
  "transformers_version": "4.8.2", "vocab_size": 30527
}"#;

fn tiny_mpnet(seed: u64, max_seq_length: usize) -> Encoder {
    let tokenizer = toy_mpnet_tokenizer(WORDS).expect("toy tokenizer");
    let vocab = tokenizer.get_vocab_size(true) as i64;
    Encoder::random(ModelConfig::tiny_mpnet(vocab), tokenizer, max_seq_length, Device::Cpu, seed).expect("tiny MPNet")
}

#[test]
fn config_picks_the_architecture_from_model_type_and_architectures() {
    let cfg = ModelConfig::from_json_str(MPNET_CONFIG).unwrap();
    assert_eq!(cfg.arch, Architecture::MPNet { relative_attention_num_buckets: 32 });
    assert_eq!((cfg.model_type(), cfg.pad_token_id, cfg.layer_norm_eps), ("mpnet", 1, 1e-5));
    assert_eq!((cfg.max_positions(), cfg.token_types(), cfg.hidden_size), (512, 1, 768));

    // MPNet defaults follow transformers' MPNetConfig, not BERT's.
    let bare = serde_json::json!({"model_type": "mpnet", "vocab_size": 100, "hidden_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 66});
    let cfg = ModelConfig::from_json_str(&bare.to_string()).unwrap();
    assert_eq!((cfg.pad_token_id, cfg.layer_norm_eps, cfg.max_positions()), (1, 1e-5, 64));

    // Without model_type, the architectures decide.
    let mut by_class = bare.clone();
    by_class.as_object_mut().unwrap().remove("model_type");
    by_class["architectures"] = serde_json::json!(["MPNetModel"]);
    assert_eq!(ModelConfig::from_json_str(&by_class.to_string()).unwrap().model_type(), "mpnet");
    by_class["architectures"] = serde_json::json!(["BertModel"]);
    assert_eq!(ModelConfig::from_json_str(&by_class.to_string()).unwrap().model_type(), "bert");

    // Saved and read back, a config keeps its architecture and values.
    for cfg in [ModelConfig::tiny(40), ModelConfig::tiny_mpnet(40), ModelConfig::from_json_str(MPNET_CONFIG).unwrap()] {
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(ModelConfig::from_json_str(&text).unwrap(), cfg, "{text}");
    }
    let written = serde_json::to_value(ModelConfig::tiny_mpnet(40)).unwrap();
    assert!(written.get("type_vocab_size").is_none(), "MPNet has no token types: {written}");
}

#[test]
fn other_model_types_are_refused_in_one_line() {
    let base = serde_json::json!({"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 66});
    let with = |extra: serde_json::Value| {
        let mut v = base.clone();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        ModelConfig::from_json_str(&v.to_string())
    };
    let (field, message) = with(serde_json::json!({"model_type": "roberta"})).unwrap_err();
    assert_eq!(field, "model_type");
    assert!(message.contains("\"roberta\"") && message.contains("bert, mpnet"), "{message}");

    // A class of another model under a supported model_type is not run through the wrong graph.
    let (field, message) =
        with(serde_json::json!({"model_type": "bert", "architectures": ["RobertaModel"]})).unwrap_err();
    assert_eq!(field, "architectures[0]");
    assert!(message.contains("RobertaModel") && message.contains("bert, mpnet"), "{message}");
    let (field, message) =
        with(serde_json::json!({"model_type": "bert", "architectures": ["MPNetForMaskedLM"]})).unwrap_err();
    assert_eq!(field, "architectures[0]");
    assert!(message.contains("mpnet") && message.contains("\"bert\""), "{message}");

    let (field, message) = with(serde_json::json!({})).unwrap_err();
    assert_eq!(field, "model_type");
    assert!(message.contains("missing") && message.contains("bert, mpnet"), "{message}");
    let (field, _) = with(serde_json::json!({"model_type": 3})).unwrap_err();
    assert_eq!(field, "model_type");
    let (field, _) =
        with(serde_json::json!({"model_type": "mpnet", "relative_attention_num_buckets": 16})).unwrap_err();
    assert_eq!(field, "relative_attention_num_buckets");

    // Through Encoder::load: one line naming the file, the field and the type; no panic.
    let dir = tempfile::tempdir().unwrap();
    let mut v = base.clone();
    v["model_type"] = "xlm-roberta".into();
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(err.contains("config.json: model_type: \"xlm-roberta\" is not supported; supported: bert, mpnet"), "{err}");
}

#[test]
fn tiny_mpnet_has_the_checkpoint_names_of_all_mpnet_base_v2() {
    let enc = tiny_mpnet(1, 32);
    let names = enc.var_store().variables();
    for key in [
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "embeddings.LayerNorm.weight",
        "embeddings.LayerNorm.bias",
        "encoder.relative_attention_bias.weight",
        "encoder.layer.0.attention.attn.q.weight",
        "encoder.layer.0.attention.attn.k.bias",
        "encoder.layer.0.attention.attn.v.weight",
        "encoder.layer.0.attention.attn.o.weight",
        "encoder.layer.0.attention.LayerNorm.weight",
        "encoder.layer.1.intermediate.dense.weight",
        "encoder.layer.1.output.dense.bias",
        "encoder.layer.1.output.LayerNorm.bias",
    ] {
        assert!(names.contains_key(key), "missing {key}");
    }
    assert!(!names.keys().any(|k| k.contains("token_type")), "MPNet has no token type embeddings");
    // 4 embedding tensors, 16 per layer, the shared relative attention bias.
    assert_eq!(names.len(), 4 + 16 * 2 + 1);
    assert_eq!(names["encoder.relative_attention_bias.weight"].size(), vec![32, 2]);
    assert_eq!(names["embeddings.position_embeddings.weight"].size(), vec![66, 32]);
    // transformers zeroes the padding rows at init.
    let pad_row = names["embeddings.position_embeddings.weight"].get(1).abs().sum(Kind::Float).double_value(&[]);
    assert_eq!(pad_row, 0.0);
}

#[test]
fn relative_position_buckets_follow_transformers() {
    // (key - query, bucket), from transformers' MPNetEncoder.relative_position_bucket with 32 buckets and
    // max distance 128: keys before the query (n = query - key > 0) use buckets 0..16, keys after 16..32; 0..8
    // exact, then 8 + floor(2 log2(n / 8)) capped at 15.
    let cases: &[(i64, i64)] = &[
        (0, 0),
        (-1, 1),
        (-7, 7),
        (-8, 8),
        (-11, 8),
        (-12, 9),
        (-16, 10),
        (-22, 10),
        (-23, 11),
        (-32, 12),
        (-45, 12),
        (-46, 13),
        (-90, 14),
        (-91, 15),
        (-127, 15),
        (-128, 15),
        (-383, 15),
        (1, 17),
        (7, 23),
        (8, 24),
        (12, 25),
        (16, 26),
        (32, 28),
        (91, 31),
        (383, 31),
    ];
    let rel: Vec<i64> = cases.iter().map(|c| c.0).collect();
    let got = mpnet::relative_position_bucket(&Tensor::from_slice(&rel), mpnet::NUM_BUCKETS, mpnet::MAX_DISTANCE);
    let got: Vec<i64> = Vec::try_from(got).unwrap();
    for ((r, want), got) in cases.iter().zip(got) {
        assert_eq!(got, *want, "relative position {r}");
    }
}

#[test]
fn mpnet_positions_start_after_the_padding_id_and_skip_padding() {
    let enc = tiny_mpnet(2, 32);
    let TransformerModel::MPNet(_) = enc.model() else { panic!("tiny_mpnet built {:?}", enc.config().arch) };
    let emb = MPNetEmbeddings::new(nn::VarStore::new(Device::Cpu).root(), enc.config());
    let ids = Tensor::from_slice(&[0i64, 9, 10, 2, 0, 9, 2, 1]).view([2, 4]);
    let pos: Vec<i64> = Vec::try_from(emb.position_ids(&ids).flatten(0, -1)).unwrap();
    assert_eq!(pos, vec![2, 3, 4, 5, 2, 3, 4, 1]);

    let tokens = enc.tokenize(&["the fox", ""]).unwrap();
    assert_eq!(tokens[0].ids.first().copied(), Some(0), "<s> first");
    assert_eq!(tokens[0].ids.last().copied(), Some(2), "</s> last");
    assert_eq!(tokens[1].ids, vec![0, 2]);
    let batch = enc.batch(&["the quick brown fox", "a"]).unwrap();
    let padded: Vec<i64> = Vec::try_from(batch.input_ids.get(1)).unwrap();
    assert_eq!(padded, vec![0, 13, 2, 1, 1, 1], "padded with <pad> = 1");
}

#[test]
fn mpnet_padded_batch_equals_one_by_one() {
    let batched = assert_padded_batch_equals_one_by_one(&tiny_mpnet(3, 32));
    for row in batched.rows() {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
}

/// MPNet's forward written out with plain ops and loops (positions counted per row, buckets from the
/// formula in f64, explicit softmax), independent of the module code.
fn explicit_mpnet(enc: &Encoder, ids: &[Vec<i64>]) -> Vec<Tensor> {
    let vars = enc.var_store().variables();
    let v = |n: &str| vars[n].shallow_clone();
    let c = enc.config();
    let (h, heads) = (c.hidden_size, c.num_attention_heads);
    let d = h / heads;
    let ln = |x: &Tensor, p: &str| {
        x.layer_norm([h], Some(&v(&format!("{p}.weight"))), Some(&v(&format!("{p}.bias"))), c.layer_norm_eps, false)
    };
    let lin = |x: &Tensor, p: &str| x.linear(&v(&format!("{p}.weight")), Some(&v(&format!("{p}.bias"))));
    let bucket = |rel: i64| -> i64 {
        let n = -rel;
        let ret = if n < 0 { 16 } else { 0 };
        let n = n.abs();
        if n < 8 {
            ret + n
        } else {
            ret + (8 + ((n as f64 / 8.0).ln() / 16f64.ln() * 8.0) as i64).min(15)
        }
    };
    let rel_bias = v("encoder.relative_attention_bias.weight"); // [32, heads]
    let mut out = Vec::new();
    for row in ids {
        let s = row.len() as i64;
        let positions: Vec<i64> = (0..s).map(|i| c.pad_token_id + 1 + i).collect();
        let x = v("embeddings.word_embeddings.weight").index_select(0, &Tensor::from_slice(row))
            + v("embeddings.position_embeddings.weight").index_select(0, &Tensor::from_slice(&positions));
        let mut x = ln(&x, "embeddings.LayerNorm");
        let mut b = vec![0i64; (s * s) as usize];
        for i in 0..s {
            for j in 0..s {
                b[(i * s + j) as usize] = bucket(j - i);
            }
        }
        let bias = rel_bias.index_select(0, &Tensor::from_slice(&b)).view([s, s, heads]).permute([2, 0, 1]);
        for l in 0..c.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let split = |t: Tensor| t.view([s, heads, d]).transpose(0, 1);
            let q = split(lin(&x, &format!("{p}.attention.attn.q")));
            let k = split(lin(&x, &format!("{p}.attention.attn.k")));
            let vv = split(lin(&x, &format!("{p}.attention.attn.v")));
            let scores = q.matmul(&k.transpose(-1, -2)) / (d as f64).sqrt() + &bias;
            let ctx = scores.softmax(-1, Kind::Float).matmul(&vv).transpose(0, 1).contiguous().view([s, h]);
            let a = ln(&(lin(&ctx, &format!("{p}.attention.attn.o")) + &x), &format!("{p}.attention.LayerNorm"));
            let f = lin(&a, &format!("{p}.intermediate.dense")).gelu("none");
            x = ln(&(lin(&f, &format!("{p}.output.dense")) + &a), &format!("{p}.output.LayerNorm"));
        }
        out.push(x);
    }
    out
}

#[test]
fn mpnet_forward_matches_an_explicit_implementation() {
    let enc = tiny_mpnet(4, 64);
    // Long enough (up to 40 tokens) for distances past 8 and 16, so the logarithmic buckets are exercised.
    let long = "the quick brown fox jumps over the lazy dog and the dog jumps over the fox with a model of data \
                for learning to train and test the model on data in the test";
    let texts = [long, "a model", "learning is training of a model with data , and the test is on data ."];
    let tokens = enc.tokenize(&texts).unwrap();
    assert!(tokens[0].len() >= 30, "{}", tokens[0].len());
    let ids: Vec<Vec<i64>> = tokens.iter().map(|t| t.ids.clone()).collect();
    let _guard = tch::no_grad_guard();
    let expected = explicit_mpnet(&enc, &ids);
    let got = enc.embed_tokens(&texts, 3).unwrap();
    for (i, (e, g)) in expected.iter().zip(&got).enumerate() {
        let e: Vec<f32> = Vec::try_from(e.flatten(0, -1)).unwrap();
        let diff = max_abs_diff(&e, &g.data);
        assert!(diff < 1e-5, "text {i}: module vs explicit MPNet differ by {diff}");
    }
}

#[test]
fn mpnet_refuses_token_types_and_inputs_past_its_positions() {
    let enc = tiny_mpnet(5, 64);
    assert_eq!(enc.config().max_positions(), 64);
    let ids = Tensor::from_slice(&[0i64, 9, 2]).view([1, 3]);
    let mask = Tensor::ones([1, 3], (Kind::Int64, Device::Cpu));
    assert!(enc.forward(&ids, &mask, None, false).is_ok());
    let types = Tensor::from_slice(&[0i64, 1, 0]).view([1, 3]);
    let err = enc.forward(&ids, &mask, Some(&types), false).unwrap_err();
    assert!(err.to_string().contains("token_type_ids"), "{err}");
    let ok = Tensor::full([1, 64], 9, (Kind::Int64, Device::Cpu));
    assert!(enc.forward(&ok, &Tensor::ones([1, 64], (Kind::Int64, Device::Cpu)), None, false).is_ok());
    let long = Tensor::full([1, 65], 9, (Kind::Int64, Device::Cpu));
    let err = enc.forward(&long, &Tensor::ones([1, 65], (Kind::Int64, Device::Cpu)), None, false).unwrap_err();
    assert!(err.to_string().contains("64 positions"), "{err}");
    let tokenizer = toy_mpnet_tokenizer(WORDS).unwrap();
    let vocab = tokenizer.get_vocab_size(true) as i64;
    assert!(Encoder::random(ModelConfig::tiny_mpnet(vocab), tokenizer, 65, Device::Cpu, 0).is_err());
}

#[test]
fn mpnet_load_round_trips_and_reports_a_bert_checkpoint_by_name() {
    let enc = tiny_mpnet(6, 16);
    let dir = tempfile::tempdir().unwrap();
    enc.var_store().save(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(enc.config()).unwrap()).unwrap();
    std::fs::write(dir.path().join("sentence_bert_config.json"), r#"{"max_seq_length": 16}"#).unwrap();
    enc.tokenizer().save(dir.path().join("tokenizer.json"), false).unwrap();
    let loaded = Encoder::load(dir.path(), Device::Cpu).unwrap();
    assert!(matches!(loaded.model(), TransformerModel::MPNet(_)));
    assert_eq!(enc.embed(&texts(), 4).unwrap(), loaded.embed(&texts(), 4).unwrap());

    // BERT weights (of the same shapes where both have a tensor) under an MPNet config: refused, naming the
    // first MPNet tensor the file lacks.
    let tokenizer = toy_tokenizer(WORDS).unwrap();
    let vocab = tokenizer.get_vocab_size(true) as i64;
    let config = ModelConfig { max_position_embeddings: 66, ..ModelConfig::tiny(vocab) };
    let bert = Encoder::random(config, tokenizer, 16, Device::Cpu, 6).unwrap();
    bert.var_store().save(dir.path().join("model.safetensors")).unwrap();
    let err = Encoder::load(dir.path(), Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model.safetensors: encoder.layer.0.attention.LayerNorm.bias: tensor missing"), "{err}");
}
