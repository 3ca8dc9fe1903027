//! The ONNX export against libtorch (moved from src/onnx/tests.rs, so that coltrast's own tests need no
//! libtorch): the export tests' tiny random BERT with and without heads against the model computed with plain
//! tch ops, the tiny MPNet against the tch encoder (and the export's bucket table against the encoder's), and
//! the int8 export of the tiny BERT against the tch reference. The tiny models are the testkit's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use coltrast::embed::{cosine, max_abs_diff, EncoderOptions, OrtEncoder};
use coltrast::onnx::proto::ModelProto;
use coltrast::onnx::*;
use coltrast_testkit::tiny::{TinyModel, DENSE as TINY_DENSE, HEADS as TINY_HEADS, HIDDEN as TINY_HIDDEN};
use coltrast_testkit::tiny::{LAYERS as TINY_LAYERS, TOKEN as TINY_TOKEN, WIDE_MAX_SEQ as TINY_MAX_SEQ};
use prost::Message;

// the same texts as src/onnx/tests.rs's
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

/// libonnxruntime.so as `make setup` installs it, or None (with a message) when absent.
fn ort_lib(test: &str) -> Option<PathBuf> {
    let p = coltrast::settings::Settings::default().ort_library_path();
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("SKIP {test}: no ONNX Runtime library at {} (run `make setup`)", p.display());
        None
    }
}

/// The export tests' tiny random BERT (as src/onnx/testutil.rs's `write_tiny_model`).
fn write_tiny_model(dir: &Path, dense: bool, token_head: bool, seed: u64) {
    TinyModel::wide(dense, token_head, seed).write(dir);
}

struct Reference {
    sentence: Vec<Vec<f32>>,
    tokens: Vec<Vec<f32>>,
    hidden: Vec<Vec<f32>>,
}

/// The model computed with plain tch ops, one unpadded sequence at a time, from the safetensors files.
fn tch_reference(dir: &Path, ids: &[Vec<u32>], dense: bool, tanh: bool, head: bool) -> Reference {
    use tch::{Kind, Tensor};
    let load = |p: &Path| -> HashMap<String, Tensor> { Tensor::read_safetensors(p).unwrap().into_iter().collect() };
    let w = load(&dir.join("model.safetensors"));
    let g = |k: &str| w.get(k).unwrap_or_else(|| panic!("{k}")).shallow_clone();
    let h = TINY_HIDDEN as i64;
    let nh = TINY_HEADS as i64;
    let dh = h / nh;
    let lin = |x: &Tensor, p: &str| x.matmul(&g(&format!("{p}.weight")).tr()) + g(&format!("{p}.bias"));
    let ln = |x: &Tensor, p: &str| {
        x.layer_norm([h], Some(&g(&format!("{p}.weight"))), Some(&g(&format!("{p}.bias"))), 1e-12, false)
    };
    let dense_w = dense.then(|| load(&dir.join("2_Dense/model.safetensors")));
    let head_w = head.then(|| load(&dir.join("coltrast_token_head.safetensors")));
    let mut r = Reference { sentence: vec![], tokens: vec![], hidden: vec![] };
    for seq in ids {
        let l = seq.len() as i64;
        let idt = Tensor::from_slice(&seq.iter().map(|&x| x as i64).collect::<Vec<_>>());
        let e = g("embeddings.word_embeddings.weight").index_select(0, &idt)
            + g("embeddings.position_embeddings.weight").narrow(0, 0, l)
            + g("embeddings.token_type_embeddings.weight").get(0);
        let mut x = ln(&e, "embeddings.LayerNorm");
        for layer in 0..TINY_LAYERS {
            let p = format!("encoder.layer.{layer}");
            let heads = |t: Tensor| t.view([l, nh, dh]).permute([1, 0, 2]);
            let q = heads(lin(&x, &format!("{p}.attention.self.query")));
            let k = heads(lin(&x, &format!("{p}.attention.self.key")));
            let v = heads(lin(&x, &format!("{p}.attention.self.value")));
            let probs = (q.matmul(&k.transpose(1, 2)) / (dh as f64).sqrt()).softmax(-1, Kind::Float);
            let ctx = probs.matmul(&v).permute([1, 0, 2]).reshape([l, h]);
            let a = ln(
                &(lin(&ctx, &format!("{p}.attention.output.dense")) + &x),
                &format!("{p}.attention.output.LayerNorm"),
            );
            let i = lin(&a, &format!("{p}.intermediate.dense")).gelu("none");
            x = ln(&(lin(&i, &format!("{p}.output.dense")) + &a), &format!("{p}.output.LayerNorm"));
        }
        let mut pooled = x.mean_dim(Some([0i64].as_slice()), false, Kind::Float);
        if let Some(dw) = &dense_w {
            pooled = pooled.matmul(&dw["linear.weight"].tr()) + &dw["linear.bias"];
            if tanh {
                pooled = pooled.tanh();
            }
        }
        let sent = &pooled / pooled.norm().clamp_min(1e-12);
        let tok = match &head_w {
            Some(hw) => x.matmul(&hw["weight"].tr()) + &hw["bias"],
            None => x.shallow_clone(),
        };
        let tok = &tok / tok.norm_scalaropt_dim(2, [-1i64], true).clamp_min(1e-12);
        let flat = |t: &Tensor| Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap();
        r.sentence.push(flat(&sent));
        r.tokens.push(flat(&tok));
        r.hidden.push(flat(&x));
    }
    r
}

fn check_tiny_against_tch(dense: bool, tanh: bool, head: bool) {
    let test = format!("tiny_model_matches_tch(dense={dense}, tanh={tanh}, head={head})");
    let Some(lib) = ort_lib(&test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, dense, head, 42);
    if tanh {
        let cfg = std::fs::read_to_string(src.join("2_Dense/config.json")).unwrap();
        let cfg = cfg.replace("torch.nn.modules.linear.Identity", "torch.nn.modules.activation.Tanh");
        std::fs::write(src.join("2_Dense/config.json"), cfg).unwrap();
    }
    let onnx_dir = tmp.path().join("onnx");
    export_sentence_model_with(
        &src,
        &onnx_dir.join("model.onnx"),
        &ExportOptions { last_hidden_state: true, ..Default::default() },
    )
    .unwrap();
    // a small token budget forces several batches with different padding
    let opts = EncoderOptions { intra_threads: 1, max_batch_tokens: 48, max_batch_size: 3, ..Default::default() };
    let enc = OrtEncoder::load_with(&onnx_dir, &lib, opts).unwrap();
    let d = if dense { TINY_DENSE } else { TINY_HIDDEN };
    let t = if head { TINY_TOKEN } else { TINY_HIDDEN };
    assert_eq!((enc.dim(), enc.token_dim()), (d, t));

    let ids = enc.tokenize(TEXTS).unwrap();
    assert_eq!(ids[4].len(), TINY_MAX_SEQ, "truncated at max_seq_length, not tokenizer.json's 8");
    assert!(ids.iter().all(|s| s[0] == 2 && *s.last().unwrap() == 3), "[CLS] ... [SEP]");
    assert!(ids[5].contains(&1), "unknown words map to [UNK]");
    let r = tch_reference(&src, &ids, dense, tanh, head);

    let emb = enc.embed(TEXTS).unwrap();
    assert_eq!((emb.len(), emb.dim), (TEXTS.len(), d));
    let mut worst = 0f32;
    for (i, want) in r.sentence.iter().enumerate() {
        worst = worst.max(max_abs_diff(emb.row(i), want));
    }
    assert!(worst <= 1e-4, "sentence max abs diff {worst}");

    let toks = enc.embed_tokens(TEXTS).unwrap();
    let mut worst_t = 0f32;
    for (i, rows) in toks.iter().enumerate() {
        assert_eq!(rows.ids, ids[i]);
        assert_eq!((rows.len(), rows.dim), (ids[i].len(), t));
        worst_t = worst_t.max(max_abs_diff(&rows.data, &r.tokens[i]));
    }
    assert!(worst_t <= 1e-4, "token max abs diff {worst_t}");

    // the raw hidden state, all texts in one padded batch
    let refs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
    let out = enc.run_batch(&refs, &[LAST_HIDDEN_STATE]).unwrap();
    let width = out[0].shape[1];
    assert_eq!(out[0].shape, vec![ids.len(), width, TINY_HIDDEN]);
    let mut worst_h = 0f32;
    for (i, s) in ids.iter().enumerate() {
        let start = i * width * TINY_HIDDEN;
        worst_h = worst_h.max(max_abs_diff(&out[0].data[start..start + s.len() * TINY_HIDDEN], &r.hidden[i]));
    }
    assert!(worst_h <= 1e-4, "hidden max abs diff {worst_h}");
    eprintln!("{test}: max abs diff sentence {worst:.2e}, tokens {worst_t:.2e}, hidden {worst_h:.2e}");
}

#[test]
fn tiny_model_with_dense_and_token_head_matches_tch() {
    check_tiny_against_tch(true, false, true);
}

#[test]
fn tiny_model_without_heads_matches_tch() {
    check_tiny_against_tch(false, false, false);
}

#[test]
fn tiny_model_with_tanh_dense_matches_tch() {
    check_tiny_against_tch(true, true, false);
}

// ---------------------------------------------------------------------------------------------------------
// MPNet

/// A tiny random MPNet (2 layers, hidden 32, 2 heads, 66 positions, pad id 1) written by the testkit as a
/// sentence-transformers dir with max_seq_length 40; returns the tch encoder loaded from that dir.
fn write_tiny_mpnet(dir: &Path, seed: u64) -> coltrast_torch::encoder::Encoder {
    TinyModel { seed, max_seq_length: 40, ..TinyModel::mpnet() }.write(dir);
    coltrast_torch::encoder::Encoder::load(dir, tch::Device::Cpu).unwrap()
}

#[test]
fn mpnet_buckets_equal_the_tch_encoders() {
    // The export's constant bucket table must be what the tch encoder (and so transformers) computes, at every
    // distance up to past max_seq_length 384 (rounding at the logarithmic bucket edges included).
    let rel: Vec<i64> = (-600..=600).collect();
    let want = coltrast_torch::encoder::mpnet::relative_position_bucket(
        &tch::Tensor::from_slice(&rel),
        coltrast_torch::encoder::mpnet::NUM_BUCKETS,
        coltrast_torch::encoder::mpnet::MAX_DISTANCE,
    );
    let want: Vec<i64> = Vec::try_from(want).unwrap();
    let got: Vec<i64> = rel.iter().map(|&r| coltrast::onnx::model_dir::mpnet_bucket(r)).collect();
    assert_eq!(got, want);
}

#[test]
fn tiny_mpnet_export_matches_the_tch_encoder() {
    let test = "tiny_mpnet_export_matches_the_tch_encoder";
    let Some(lib) = ort_lib(test) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    let tch_enc = write_tiny_mpnet(&src, 42);
    let onnx_dir = tmp.path().join("onnx");
    let info = export_sentence_model_with(
        &src,
        &onnx_dir.join("model.onnx"),
        &ExportOptions { last_hidden_state: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!((info.embedding_dim, info.hidden_size, info.max_seq_length), (32, 32, 40));
    let proto = decode(&onnx_dir.join("model.onnx"));
    let inits: Vec<&str> = proto.graph.as_ref().unwrap().initializer.iter().map(|t| t.name.as_str()).collect();
    assert!(inits.contains(&"encoder.relative_attention_bias.weight"), "{inits:?}");
    assert!(!inits.iter().any(|n| n.contains("token_type")), "MPNet has no token types: {inits:?}");
    let j = OnnxModelInfo::read(&onnx_dir).unwrap();
    assert_eq!((j.model_type.as_str(), j.pad_token_id), ("mpnet", 1), "batches are padded with <pad>");

    // a small token budget forces several batches with different padding
    let opts = EncoderOptions { intra_threads: 1, max_batch_tokens: 48, max_batch_size: 3, ..Default::default() };
    let enc = OrtEncoder::load_with(&onnx_dir, &lib, opts).unwrap();
    let texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).chain(["the model ".repeat(30)]).collect();
    let texts: Vec<&str> = texts.iter().map(|t| t.as_str()).collect();
    let ids = enc.tokenize(&texts).unwrap();
    let want_ids = tch_enc.tokenize(&texts).unwrap();
    for (got, want) in ids.iter().zip(&want_ids) {
        assert_eq!(got.iter().map(|&i| i as i64).collect::<Vec<_>>(), want.ids);
        assert_eq!((got[0], *got.last().unwrap()), (0, 2), "<s> ... </s>");
    }
    assert_eq!(ids.last().unwrap().len(), 40, "truncated at max_seq_length (past 16 tokens of distance)");

    let emb = enc.embed(&texts).unwrap();
    let want = tch_enc.embed(&texts, 4).unwrap();
    let (mut worst, mut min_cos) = (0f32, 1f32);
    for i in 0..texts.len() {
        worst = worst.max(max_abs_diff(emb.row(i), want.row(i)));
        min_cos = min_cos.min(cosine(emb.row(i), want.row(i)));
    }
    assert!(worst <= 1e-4 && min_cos >= 0.9999, "sentence max abs diff {worst}, min cos {min_cos}");

    // the raw hidden state, all texts in one padded batch
    let hidden = tch_enc.embed_tokens(&texts, 1).unwrap();
    let refs: Vec<&[u32]> = ids.iter().map(|s| s.as_slice()).collect();
    let out = enc.run_batch(&refs, &[LAST_HIDDEN_STATE]).unwrap();
    let width = out[0].shape[1];
    let mut worst_h = 0f32;
    for (i, s) in ids.iter().enumerate() {
        let start = i * width * TINY_HIDDEN;
        worst_h = worst_h.max(max_abs_diff(&out[0].data[start..start + s.len() * TINY_HIDDEN], &hidden[i].data));
    }
    assert!(worst_h <= 1e-4, "hidden max abs diff {worst_h}");
    eprintln!("{test}: sentence max abs diff {worst:.2e} (min cos {min_cos:.8}), hidden {worst_h:.2e}");
}

fn op_counts(path: &Path) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for node in decode(path).graph.unwrap().node {
        *n.entry(node.op_type).or_insert(0) += 1;
    }
    n
}

#[test]
fn tiny_int8_export_quantises_every_encoder_matmul_and_stays_close_to_tch() {
    let test = "tiny_int8_export_quantises_every_encoder_matmul_and_stays_close_to_tch";
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("model");
    write_tiny_model(&src, true, true, 42);
    let (f32_path, int8_path) = (tmp.path().join("f32/model.onnx"), tmp.path().join("int8/model.onnx"));
    let f = export_sentence_model(&src, &f32_path).unwrap();
    let opts = ExportOptions { quantize: Quantize::Int8, ..Default::default() };
    let q = export_sentence_model_with(&src, &int8_path, &opts).unwrap();
    assert_eq!((f.quantize, q.quantize), (Quantize::None, Quantize::Int8));
    assert_eq!(OnnxModelInfo::read(int8_path.parent().unwrap()).unwrap().quantize, Quantize::Int8);
    assert_eq!(OnnxModelInfo::read(f32_path.parent().unwrap()).unwrap().quantize, Quantize::None);

    let (fc, qc) = (op_counts(&f32_path), op_counts(&int8_path));
    let get = |m: &HashMap<String, usize>, k: &str| m.get(k).copied().unwrap_or(0);
    assert_eq!(get(&fc, "MatMulInteger"), 0);
    // Q, K, V, attention output, intermediate, output per layer; Q/K/V share one quantised input
    assert_eq!(get(&qc, "MatMulInteger"), 6 * TINY_LAYERS);
    // one quantisation per distinct input: per tensor for x (Q/K/V), the context and the attention norm;
    // per token for the GELU output, whose outliers would set one tensor-wide step for every token
    assert_eq!(get(&qc, "DynamicQuantizeLinear"), 3 * TINY_LAYERS);
    assert_eq!(get(&qc, "QuantizeLinear"), TINY_LAYERS);
    // left in float: the two attention products per layer, Dense and the token head
    assert_eq!(get(&qc, "MatMul"), 2 * TINY_LAYERS + 2);
    assert_eq!(get(&fc, "MatMul"), 8 * TINY_LAYERS + 2);
    let g = decode(&int8_path).graph.unwrap();
    let int8_weights = g.initializer.iter().filter(|t| t.data_type == coltrast::onnx::proto::data_type::INT8).count();
    assert_eq!(int8_weights, 2 * 6 * TINY_LAYERS, "values and zero points of each quantised weight");

    let Some(lib) = ort_lib(test) else { return };
    // small batches: dynamic batch and sequence dims
    let eopts = EncoderOptions { intra_threads: 1, max_batch_tokens: 48, max_batch_size: 3, ..Default::default() };
    let enc = OrtEncoder::load_with(int8_path.parent().unwrap(), &lib, eopts).unwrap();
    let ids = enc.tokenize(TEXTS).unwrap();
    let r = tch_reference(&src, &ids, true, false, true);
    let emb = enc.embed(TEXTS).unwrap();
    let min_cos = (0..TEXTS.len()).map(|i| cosine(emb.row(i), &r.sentence[i])).fold(1f32, f32::min);
    let worst = (0..TEXTS.len()).map(|i| max_abs_diff(emb.row(i), &r.sentence[i])).fold(0f32, f32::max);
    let toks = enc.embed_tokens(TEXTS).unwrap();
    let mut min_tok = 1f32;
    for (i, rows) in toks.iter().enumerate() {
        for (j, want) in r.tokens[i].chunks(TINY_TOKEN).enumerate() {
            min_tok = min_tok.min(cosine(rows.row(j), want));
        }
    }
    eprintln!("{test}: sentence min cos {min_cos:.5} (max abs diff {worst:.2e}), token min cos {min_tok:.5}");
    assert!(min_cos >= 0.99, "int8 sentence cos {min_cos}");
    assert!(min_tok >= 0.95, "int8 token cos {min_tok}");
    assert!(worst > 1e-6, "the int8 graph must actually differ from float32");
}
