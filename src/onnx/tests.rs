//! Export tests: graph structure and errors on a tiny random BERT with heads, the real MiniLM and MPNet
//! against sentence-transformers' numbers, and an optional cross-check with Python's onnxruntime. The tiny
//! models against libtorch (a tch reference, the tch encoder) are in torch/tests/onnx_parity.rs.

use std::path::Path;

use prost::Message;

use super::proto::{tensor_shape_proto::dimension::Value as DimValue, type_proto, ModelProto};
use super::testutil::*;
use super::*;
use crate::embed::{cosine, max_abs_diff, EncoderOptions, OrtEncoder};

const TEXTS: &[&str] = &[
    "the model is a query",
    "embedding data",
    "a",
    "The Query! the data, the token? the model embeds tokens",
    // longer than max_seq_length (24) once tokenised: truncated
    "the model the data the query the token the model the data the query the token the model the data the query the token",
    "zzz 7 xyz",
    "is the data a model",
];

fn decode(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

fn dims_of(v: &super::proto::ValueInfoProto) -> Vec<String> {
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.clone()) else {
        panic!("not a tensor type")
    };
    t.shape
        .unwrap()
        .dim
        .iter()
        .map(|d| match d.value.as_ref().unwrap() {
            DimValue::DimValue(v) => v.to_string(),
            DimValue::DimParam(p) => p.clone(),
        })
        .collect()
}

#[test]
fn tiny_export_writes_a_well_formed_model_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, true, 7);
    let out = tmp.path().join("onnx").join("model.onnx");
    let info = export_sentence_model(&src, &out).unwrap();
    assert_eq!((info.embedding_dim, info.token_dim, info.hidden_size), (TINY_DENSE, TINY_TOKEN, TINY_HIDDEN));
    assert_eq!((info.num_layers, info.max_seq_length, info.opset), (TINY_LAYERS, TINY_MAX_SEQ, 17));
    assert!(info.has_dense && info.has_token_head);
    assert_eq!(info.outputs, vec![SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS]);

    let m = decode(&out);
    assert_eq!(m.ir_version, 8);
    assert_eq!(m.opset_import.len(), 1);
    assert_eq!((m.opset_import[0].domain.as_str(), m.opset_import[0].version), ("", 17));
    let g = m.graph.unwrap();
    let names: Vec<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, vec![INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS]);
    for v in &g.input {
        assert_eq!(dims_of(v), vec!["batch", "sequence"]);
    }
    assert_eq!(dims_of(&g.output[0]), vec!["batch".to_string(), TINY_DENSE.to_string()]);
    assert_eq!(dims_of(&g.output[1]), vec!["batch".to_string(), "sequence".into(), TINY_TOKEN.to_string()]);
    let ops: std::collections::BTreeSet<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
    for op in ["Gather", "LayerNormalization", "Softmax", "Erf", "MatMul", "ReduceSum", "Slice", "Shape"] {
        assert!(ops.contains(op), "missing {op} in {ops:?}");
    }
    // every node input is a graph input, an initializer or an earlier node's output (topological order)
    let mut known: std::collections::HashSet<String> = g.input.iter().map(|v| v.name.clone()).collect();
    known.extend(g.initializer.iter().map(|t| t.name.clone()));
    for n in &g.node {
        for i in &n.input {
            assert!(known.contains(i), "node {} reads {i} before it exists", n.name);
        }
        known.extend(n.output.iter().cloned());
    }
    // attribute scalars are present even when zero (proto2 has_i)
    let gather = g.node.iter().find(|n| n.op_type == "Gather").unwrap();
    assert_eq!(gather.attribute[0].i, Some(0));

    let dir = out.parent().unwrap();
    assert!(dir.join("tokenizer.json").is_file());
    let j = OnnxModelInfo::read(dir).unwrap();
    assert_eq!(j.model_file, "model.onnx");
    assert_eq!((j.embedding_dim, j.token_dim, j.max_seq_length), (TINY_DENSE, TINY_TOKEN, TINY_MAX_SEQ));
    assert!(j.dense && j.token_head && j.sentence_normalized);
    assert_eq!((j.model_type.as_str(), j.pad_token_id), ("bert", 0));
    assert_eq!(j.inputs[0].shape, vec![serde_json::json!("batch"), serde_json::json!("sequence")]);
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn export_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out/model.onnx");

    let e = export_sentence_model(&tmp.path().join("nope"), &out).unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("not found"), "{e}");

    let src = tmp.path().join("m");
    write_tiny_model(&src, true, true, 1);
    std::fs::write(src.join("coltrast.json"), r#"{"embedding_dim": 99, "token_dim": 8}"#).unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err().to_string();
    assert!(e.contains("coltrast.json") && e.contains("embedding_dim") && e.contains("99"), "{e}");

    write_tiny_model(&src, true, true, 1);
    std::fs::write(
        src.join("2_Dense/config.json"),
        r#"{"in_features": 31, "out_features": 16, "bias": true, "activation_function": "torch.nn.modules.linear.Identity"}"#,
    )
    .unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err().to_string();
    assert!(e.contains("2_Dense/config.json") && e.contains("in_features"), "{e}");

    write_tiny_model(&src, true, true, 1);
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap().replace("\"gelu\"", "\"relu\"");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err();
    assert!(e.to_string().contains("config.json") && e.to_string().contains("hidden_act"), "{e}");
    assert_eq!(e.exit_code(), 1);

    // Another model type is refused by name; BERT weights under an MPNet config are not built into a graph.
    write_tiny_model(&src, true, true, 1);
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap().replace("\"bert\"", "\"roberta\"");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err().to_string();
    assert!(e.contains("config.json: model_type: \"roberta\" is not supported; supported: bert, mpnet"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap().replace("\"roberta\"", "\"mpnet\"");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("encoder.relative_attention_bias.weight"), "{e}");

    write_tiny_model(&src, true, true, 1);
    std::fs::write(src.join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ").unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");

    let src = tmp.path().join("m2");
    write_tiny_model(&src, false, false, 1);
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();
    let e = export_sentence_model(&src, &out).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    assert!(!out.exists());
}

#[test]
fn mpnet_matches_sentence_transformers() {
    // The real all-mpnet-base-v2 exported and run by ONNX Runtime against ../shared/fixtures/mpnet_reference.json
    // (sentence-transformers 6.2.0): identical ids, sentence cosine >= 0.9999, hidden-state samples within 1e-4.
    let test = "mpnet_matches_sentence_transformers";
    let (Some(lib), Some(model), Some(fx)) =
        (ort_lib(test), mpnet_dir(test), fixture_named(test, "mpnet_reference.json"))
    else {
        return;
    };
    let cases = cases(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let onnx_dir = tmp.path().join("onnx");
    let info = export_sentence_model_with(
        &model,
        &onnx_dir.join("model.onnx"),
        &ExportOptions { last_hidden_state: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!((info.embedding_dim, info.token_dim, info.max_seq_length), (768, 768, 384));
    let opts = EncoderOptions { intra_threads: 2, max_batch_size: 4, ..Default::default() };
    let enc = OrtEncoder::load_with(&onnx_dir, &lib, opts).unwrap();
    let (_, _, worst, min_cos) = assert_ids_and_sentences(&enc, &cases, 768);

    // the hidden state, each case alone (as the reference ran them)
    let mut worst_h = 0f32;
    for c in &cases {
        let out = enc.run_batch(&[c.ids.as_slice()], &[LAST_HIDDEN_STATE]).unwrap();
        let n = c.ids.len();
        let row = |t: usize| &out[0].data[t * 768..(t + 1) * 768];
        worst_h = worst_h.max(max_abs_diff(&row(0)[..16], &c.first16));
        worst_h = worst_h.max(max_abs_diff(&row(n - 1)[..16], &c.last16));
        let mean_abs: f32 = out[0].data.iter().map(|x| x.abs()).sum::<f32>() / (n * 768) as f32;
        assert!((mean_abs - c.mean_abs).abs() <= 1e-4, "mean abs {mean_abs} vs {} for {:?}", c.mean_abs, c.text);
    }
    assert!(worst_h <= 1e-4, "last hidden state max abs diff {worst_h}");
    eprintln!("{test}: sentence max abs diff {worst:.2e}, min cos {min_cos:.7}; hidden max abs diff {worst_h:.2e}");
}

#[test]
fn quantize_columns_is_symmetric_per_column() {
    // [[1.5, -0.5, 0], [-2, 0.1, 0]]: column maxima 2, 0.5 and an all-zero column
    let w = [1.5, -0.5, 0.0, -2.0, 0.1, 0.0];
    let (q, scales) = quantize_columns(&w, 2, 3);
    assert_eq!(scales, vec![2.0 / 63.0, 0.5 / 63.0, 1.0]);
    // 1.5 / (2/63) = 47.25 and 0.1 / (0.5/63) = 12.6
    assert_eq!(q, vec![47, -63, 0, -63, 13, 0]);
    let mut rng = Rng::new(5);
    let (rows, cols) = (7, 5);
    let w = rng.vec(rows * cols, 3.0);
    let (q, scales) = quantize_columns(&w, rows, cols);
    for (i, (&v, &qv)) in w.iter().zip(&q).enumerate() {
        let s = scales[i % cols];
        assert!((v - qv as f32 * s).abs() <= s / 2.0 + 1e-6, "element {i}: {v} vs {qv}·{s}");
        assert!((-63..=63).contains(&qv), "7-bit weights: {qv}");
    }
    for c in 0..cols {
        assert!((0..rows).any(|r| q[r * cols + c].unsigned_abs() == 63), "column {c} uses the full 7-bit range");
    }
}

#[test]
fn bert_prefixed_keys_export_the_same_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("plain");
    write_tiny_model(&plain, true, true, 11);
    let prefixed = tmp.path().join("prefixed");
    write_tiny_model(&prefixed, true, true, 11);
    let w = super::safetensors::Weights::open(&plain.join("model.safetensors")).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = w
        .names()
        .map(|n| {
            let (shape, data) = w.f32(n).unwrap();
            (format!("bert.{n}"), shape, data)
        })
        .collect();
    let refs: Vec<(&str, &[usize], &[f32])> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())).collect();
    super::safetensors::write_f32(&prefixed.join("model.safetensors"), &refs).unwrap();
    export_sentence_model(&plain, &tmp.path().join("a/model.onnx")).unwrap();
    export_sentence_model(&prefixed, &tmp.path().join("b/model.onnx")).unwrap();
    let a = std::fs::read(tmp.path().join("a/model.onnx")).unwrap();
    let b = std::fs::read(tmp.path().join("b/model.onnx")).unwrap();
    assert!(a == b, "same weights under a `bert.` prefix must give the same ONNX bytes");
}

struct Case {
    text: String,
    ids: Vec<u32>,
    sentence: Vec<f32>,
    first16: Vec<f32>,
    last16: Vec<f32>,
    mean_abs: f32,
}

fn cases(fx: &serde_json::Value) -> Vec<Case> {
    fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            text: c["text"].as_str().unwrap().to_string(),
            ids: c["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
            sentence: f32s(&c["sentence_embedding"]),
            first16: f32s(&c["last_hidden_state_first_token_first_16"]),
            last16: f32s(&c["last_hidden_state_last_token_first_16"]),
            mean_abs: c["last_hidden_state_mean_abs"].as_f64().unwrap() as f32,
        })
        .collect()
}

/// The fixture's checks on ids and sentence embeddings, shared by every model: identical ids, and each sentence
/// embedding within cosine 0.9999 and 1e-4 of sentence-transformers'. Returns the ids, the embeddings, the
/// largest absolute difference and the smallest cosine.
fn assert_ids_and_sentences(
    enc: &OrtEncoder,
    cases: &[Case],
    dim: usize,
) -> (Vec<Vec<u32>>, crate::embed::Embeddings, f32, f32) {
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let ids = enc.tokenize(&texts).unwrap();
    for (c, got) in cases.iter().zip(&ids) {
        assert_eq!(&c.ids, got, "token ids of {:?}", c.text);
    }
    let emb = enc.embed(&texts).unwrap();
    assert_eq!((emb.len(), emb.dim), (cases.len(), dim));
    let (mut worst, mut min_cos) = (0f32, 1f32);
    for (i, c) in cases.iter().enumerate() {
        let cos = cosine(emb.row(i), &c.sentence);
        assert!(cos >= 0.9999, "cos {cos} for {:?}", c.text);
        min_cos = min_cos.min(cos);
        worst = worst.max(max_abs_diff(emb.row(i), &c.sentence));
    }
    assert!(worst <= 1e-4, "max abs diff vs sentence-transformers {worst}");
    (ids, emb, worst, min_cos)
}

#[test]
fn minilm_matches_sentence_transformers() {
    let test = "minilm_matches_sentence_transformers";
    let (Some(lib), Some(model), Some(fx)) = (ort_lib(test), minilm_dir(test), fixture(test)) else { return };
    let cases = cases(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let onnx_dir = tmp.path().join("onnx");
    let info = export_sentence_model(&model, &onnx_dir.join("model.onnx")).unwrap();
    assert_eq!((info.embedding_dim, info.token_dim, info.max_seq_length), (384, 384, 256));
    assert!(!info.has_dense && !info.has_token_head);
    for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json", INFO_FILE] {
        assert!(onnx_dir.join(f).is_file(), "{f}");
    }
    let opts = EncoderOptions { intra_threads: 2, max_batch_size: 5, ..Default::default() };
    let enc = OrtEncoder::load_with(&onnx_dir, &lib, opts).unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    // batches of at most 5 with mixed lengths (dynamic batch and sequence dims)
    let (ids, emb, worst, min_cos) = assert_ids_and_sentences(&enc, &cases, 384);
    eprintln!("{test}: max abs diff {worst:.2e}, min cos {min_cos:.7}");

    // one by one (batch 1, no padding) equals batched
    let mut worst_single = 0f32;
    for (i, t) in texts.iter().enumerate() {
        let one = enc.embed(&[*t]).unwrap();
        worst_single = worst_single.max(max_abs_diff(one.row(0), emb.row(i)));
    }
    assert!(worst_single <= 1e-5, "batched vs single {worst_single}");

    // token rows: unpadded, unit length, consistent with embed_both
    let toks = enc.embed_tokens(&texts).unwrap();
    let (emb2, toks2) = enc.embed_both(&texts).unwrap();
    assert!(max_abs_diff(&emb2.data, &emb.data) <= 1e-6);
    for (i, rows) in toks.iter().enumerate() {
        assert_eq!(rows.ids, ids[i]);
        assert_eq!((rows.len(), rows.dim), (ids[i].len(), 384));
        for r in 0..rows.len() {
            let n: f32 = rows.row(r).iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5, "token row norm {n}");
        }
        assert!(max_abs_diff(&rows.data, &toks2[i].data) <= 1e-6);
    }
    assert!(enc.embed(&[]).unwrap().is_empty());
}

#[test]
fn minilm_int8_stays_close_to_sentence_transformers() {
    let test = "minilm_int8_stays_close_to_sentence_transformers";
    let (Some(lib), Some(model), Some(fx)) = (ort_lib(test), minilm_dir(test), fixture(test)) else { return };
    let cases = cases(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let f32_dir = tmp.path().join("f32");
    let int8_dir = tmp.path().join("int8");
    let f = export_sentence_model(&model, &f32_dir.join("model.onnx")).unwrap();
    let opts = ExportOptions { quantize: Quantize::Int8, ..Default::default() };
    let q = export_sentence_model_with(&model, &int8_dir.join("model.onnx"), &opts).unwrap();
    // int8 weights: the encoder layers shrink about 4x (the word embeddings stay float32)
    assert!(q.onnx_bytes * 10 < f.onnx_bytes * 7, "int8 {} vs float32 {} bytes", q.onnx_bytes, f.onnx_bytes);
    let enc = OrtEncoder::load(&int8_dir, &lib, 2).unwrap();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let emb = enc.embed(&texts).unwrap();
    let cos: Vec<f32> = cases.iter().enumerate().map(|(i, c)| cosine(emb.row(i), &c.sentence)).collect();
    let min = cos.iter().copied().fold(1f32, f32::min);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    eprintln!(
        "{test}: int8 vs sentence-transformers cos min {min:.5}, mean {mean:.5}; {} vs {} bytes",
        q.onnx_bytes, f.onnx_bytes
    );
    assert!(min >= 0.98, "min cos {min}");
    assert!(mean >= 0.99, "mean cos {mean}");
    assert!(min < 0.99999, "quantisation must change the numbers");
}

#[test]
fn minilm_last_hidden_state_matches_fixture() {
    let test = "minilm_last_hidden_state_matches_fixture";
    let (Some(lib), Some(model), Some(fx)) = (ort_lib(test), minilm_dir(test), fixture(test)) else { return };
    let cases = cases(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let onnx_dir = tmp.path().join("onnx");
    let info = export_sentence_model_with(
        &model,
        &onnx_dir.join("model.onnx"),
        &ExportOptions { last_hidden_state: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!(info.outputs.len(), 3);
    let enc = OrtEncoder::load(&onnx_dir, &lib, 2).unwrap();
    let ids: Vec<&[u32]> = cases.iter().map(|c| c.ids.as_slice()).collect();
    // all 16 cases in one padded batch of width 256
    let out = enc.run_batch(&ids, &[LAST_HIDDEN_STATE, TOKEN_EMBEDDINGS]).unwrap();
    let (hidden, tokens) = (&out[0], &out[1]);
    let width = hidden.shape[1];
    assert_eq!(hidden.shape, vec![cases.len(), 256, 384]);
    let mut worst = 0f32;
    let mut worst_norm = 0f32;
    for (i, c) in cases.iter().enumerate() {
        let n = c.ids.len();
        let row = |t: usize| &hidden.data[(i * width + t) * 384..(i * width + t + 1) * 384];
        worst = worst.max(max_abs_diff(&row(0)[..16], &c.first16));
        worst = worst.max(max_abs_diff(&row(n - 1)[..16], &c.last16));
        let mean_abs: f32 = (0..n).flat_map(|t| row(t).iter()).map(|x| x.abs()).sum::<f32>() / (n * 384) as f32;
        assert!((mean_abs - c.mean_abs).abs() <= 1e-4, "mean abs {mean_abs} vs {} for {:?}", c.mean_abs, c.text);
        // without a token head, token_embeddings = per-token L2-normalised hidden state
        for t in 0..n {
            let r = row(t);
            let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
            let want: Vec<f32> = r.iter().map(|x| x / norm).collect();
            let got = &tokens.data[(i * width + t) * 384..(i * width + t + 1) * 384];
            worst_norm = worst_norm.max(max_abs_diff(got, &want));
        }
    }
    assert!(worst <= 1e-4, "last hidden state max abs diff {worst}");
    assert!(worst_norm <= 1e-5, "token_embeddings vs normalised hidden {worst_norm}");
    eprintln!("{test}: hidden-state max abs diff {worst:.2e}");
}

/// Cross-check with Python's onnxruntime (and onnx.checker when the `onnx` package is there). Uses the first of
/// `$COLTRAST_TEST_PYTHON`, the benchmark venv (`$COLTRAST_CACHE/bench-venv`, which `make bench` creates with
/// onnxruntime 1.31.1) and `python3` that imports onnxruntime; skips when none does.
#[test]
fn python_onnxruntime_agrees() {
    let test = "python_onnxruntime_agrees";
    let Some(lib) = ort_lib(test) else { return };
    let mut candidates: Vec<String> = std::env::var("COLTRAST_TEST_PYTHON").into_iter().collect();
    candidates.push(crate::settings::cache_dir().join("bench-venv/bin/python").display().to_string());
    candidates.push("python3".into());
    let imports = |py: &String| {
        let probe = std::process::Command::new(py).args(["-c", "import onnxruntime, numpy"]).output();
        matches!(&probe, Ok(o) if o.status.success())
    };
    let Some(python) = candidates.iter().find(|py| imports(py)).cloned() else {
        eprintln!(
            "SKIP {test}: no Python imports onnxruntime and numpy (tried {candidates:?}; `make bench` creates one)"
        );
        return;
    };
    for quantize in [Quantize::None, Quantize::Int8] {
        python_onnxruntime_agrees_on(test, &lib, &python, quantize);
    }
}

fn python_onnxruntime_agrees_on(test: &str, lib: &Path, python: &str, quantize: Quantize) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, true, 3);
    let onnx_dir = tmp.path().join("onnx");
    let model_path = onnx_dir.join("model.onnx");
    export_sentence_model_with(&src, &model_path, &ExportOptions { quantize, ..Default::default() }).unwrap();
    let enc = OrtEncoder::load(&onnx_dir, lib, 1).unwrap();
    let ids = enc.tokenize(TEXTS).unwrap();
    let refs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
    let ours = enc.run_batch(&refs, &[SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS]).unwrap();
    let width = ours[1].shape[1];
    let mut input_ids = vec![vec![0i64; width]; ids.len()];
    let mut mask = vec![vec![0i64; width]; ids.len()];
    for (i, s) in ids.iter().enumerate() {
        for (j, &t) in s.iter().enumerate() {
            input_ids[i][j] = t as i64;
            mask[i][j] = 1;
        }
    }
    let inputs = serde_json::json!({"input_ids": input_ids, "attention_mask": mask});
    let in_path = tmp.path().join("inputs.json");
    std::fs::write(&in_path, inputs.to_string()).unwrap();
    let script = r#"
import json, sys
import numpy as np
import onnxruntime as ort
model, inp = sys.argv[1], json.load(open(sys.argv[2]))
checked = "skipped"
try:
    import onnx
    onnx.checker.check_model(onnx.load(model), full_check=True)
    checked = "ok"
except ImportError:
    pass
sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
ids = np.array(inp["input_ids"], dtype=np.int64)
feeds = {"input_ids": ids, "attention_mask": np.array(inp["attention_mask"], dtype=np.int64),
         "token_type_ids": np.zeros_like(ids)}
s, t = sess.run(["sentence_embedding", "token_embeddings"], feeds)
print(json.dumps({"checker": checked, "sentence": s.reshape(-1).tolist(), "tokens": t.reshape(-1).tolist(),
                  "shapes": [list(s.shape), list(t.shape)]}))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script, model_path.to_str().unwrap(), in_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(v["checker"], "failed");
    let s = f32s(&v["sentence"]);
    let t = f32s(&v["tokens"]);
    assert_eq!(v["shapes"][1], serde_json::json!([ids.len(), width, TINY_TOKEN]));
    let ds = max_abs_diff(&s, &ours[0].data);
    let dt = max_abs_diff(&t, &ours[1].data);
    assert!(ds <= 1e-5 && dt <= 1e-5, "python vs rust ORT ({quantize:?}): sentence {ds}, tokens {dt}");
    eprintln!("{test} ({quantize:?}): onnx.checker {}, max abs diff sentence {ds:.2e} tokens {dt:.2e}", v["checker"]);
}

/// Throughput on ~300 BoolQ passages (not a timed test; run with `--ignored --nocapture`).
#[test]
#[ignore]
fn measure_boolq_throughput() {
    let test = "measure_boolq_throughput";
    let (Some(lib), Some(model)) = (ort_lib(test), minilm_dir(test)) else { return };
    let corpus = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/boolq/corpus.jsonl");
    let Ok(text) = std::fs::read_to_string(corpus) else {
        eprintln!("SKIP {test}: {corpus} absent");
        return;
    };
    let n: usize = std::env::var("COLTRAST_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let threads: usize = std::env::var("COLTRAST_BENCH_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let passages: Vec<String> = text
        .lines()
        .take(n)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["title"].as_str().unwrap_or(""), v["text"].as_str().unwrap_or(""))
        })
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    // COLTRAST_BENCH_OUT keeps the exported directory for inspection
    let onnx_dir = std::env::var_os("COLTRAST_BENCH_OUT").map_or_else(|| tmp.path().join("onnx"), Into::into);
    let t0 = std::time::Instant::now();
    export_sentence_model(&model, &onnx_dir.join("model.onnx")).unwrap();
    let export_s = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let enc = OrtEncoder::load(&onnx_dir, &lib, threads).unwrap();
    let load_s = t0.elapsed().as_secs_f64();
    let refs: Vec<&str> = passages.iter().map(|s| s.as_str()).collect();
    let ids = enc.tokenize(&refs).unwrap();
    let tokens: usize = ids.iter().map(|s| s.len()).sum();
    let _ = enc.embed(&refs[..8]).unwrap(); // warm-up
    let t0 = std::time::Instant::now();
    let e = enc.embed(&refs).unwrap();
    let s = t0.elapsed().as_secs_f64();
    let t0 = std::time::Instant::now();
    let _ = enc.embed_tokens(&refs).unwrap();
    let st = t0.elapsed().as_secs_f64();
    eprintln!(
        "{test}: {} passages, {tokens} tokens (mean {:.0}), {threads} threads: embed {:.2}s = {:.1} passages/s; \
         embed_tokens {:.2}s = {:.1} passages/s; export {export_s:.1}s, session load {load_s:.1}s",
        e.len(),
        tokens as f64 / e.len() as f64,
        s,
        e.len() as f64 / s,
        st,
        e.len() as f64 / st
    );
}
