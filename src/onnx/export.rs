//! Building the ONNX graph of a sentence model and writing the ONNX directory.
//!
//! What: BERT embeddings (word + position + token type, LayerNormalization) or MPNet's (word + position
//! counted from `pad_token_id + 1`), N encoder layers (Q/K/V MatMul+Add, multi-head scaled dot-product
//! attention with an additive mask `(1 - mask) * -1e9` (MPNet: plus its relative position bias), Softmax,
//! output dense + residual + LayerNormalization, intermediate dense + exact GELU
//! `0.5·x·(1 + erf(x/√2))`, output dense + residual + LayerNormalization), then:
//! - `sentence_embedding` = L2-normalise([Dense](mean-pool(hidden, attention_mask))), always normalised
//!   (coltrast scores by inner product; a modules.json without Normalize only gets a warning);
//! - `token_embeddings` = per-token L2-normalise(token_head(hidden)) or, **without a token head (the base
//!   model), the last hidden state itself, L2-normalised per token** (dim = hidden_size). Padded positions
//!   are computed too; callers drop them using the attention mask.
//!
//! With [`Quantize::Int8`] the six weight MatMuls of every encoder layer (Q, K, V, attention output,
//! intermediate, output) are dynamically quantised with standard ONNX ops: the activation is quantised at run
//! time, the weight is stored as symmetric per-output-column int8 with its float scales, `MatMulInteger`
//! multiplies, and `Cast` + `Mul` by the activation and weight scales bring the int32 result back to float
//! before the bias `Add`. The inputs of Q/K/V (shared), the attention output and the intermediate dense get
//! one scale per tensor (`DynamicQuantizeLinear`, uint8, which ONNX Runtime fuses into one int8 kernel); the
//! GELU output that feeds the output dense gets one symmetric scale per token ([`quantize_rows`]), because
//! its outliers would otherwise set the step for every token (see [`Act`]). Embeddings, attention scores, LayerNorm, pooling, Dense and
//! the token head stay float32.
//!
//! The 1/√d_head attention scale is folded into the query weights and bias. Position ids are the first
//! `sequence` rows of the position table (`Shape(input_ids)[1]` → `Slice`), so sequences must be at most
//! `max_position_embeddings` long (the encoder truncates at `max_seq_length`). Opset 17, IR version 8,
//! float32 initializers.
//!
//! Inputs: a model directory (see [`super::model_dir`]) and the path of the `.onnx` file to write.
//! Graph inputs `input_ids`, `attention_mask`, `token_type_ids`: int64 `[batch, sequence]`.
//!
//! Outputs: next to the `.onnx` file (written atomically), copies of the tokenizer files and
//! `onnx_model.json` ([`OnnxModelInfo`]); an [`ExportInfo`] summary.
//!
//! Example:
//! ```no_run
//! use std::path::Path;
//! let info = coltrast::onnx::export_sentence_model(Path::new("models/all-MiniLM-L6-v2"), Path::new("out/model.onnx"))?;
//! println!("{} dims, {} token dims", info.embedding_dim, info.token_dim);
//! # Ok::<(), coltrast::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::graph::{attr_f, attr_i, attr_ints, GraphBuilder};
use super::model_dir::{mpnet_bucket, BertConfig, DenseActivation, EncoderLayer, LayerNorm, Linear, SentenceModel};
use super::proto::{
    data_type, Dim, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, ValueInfoProto,
};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::write_atomic;

pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";
pub const TOKEN_EMBEDDINGS: &str = "token_embeddings";
/// Only in exports with [`ExportOptions::last_hidden_state`]: the raw (un-normalised) encoder output.
pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
pub const INFO_FILE: &str = "onnx_model.json";
pub const INFO_FORMAT: u32 = 1;
/// Tokenizer files copied next to the model when present (tokenizer.json is required).
pub const TOKENIZER_FILES: &[&str] =
    &["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "added_tokens.json"];

/// Additive attention bias for masked positions (exp underflows to exactly 0 in f32).
const MASK_NEG: f32 = -1e9;
const POOL_EPS: f32 = 1e-9;
const NORM_EPS: f32 = 1e-12;

/// Largest magnitude of a symmetric int8 weight. Weights use 7 bits (-63..=63), ONNX Runtime's `reduce_range`: on x86 CPUs without VNNI (AVX2 only), the
/// u8 × s8 kernel adds pairs of products in int16 (`vpmaddubsw`), which saturates with full-range weights
/// (measured on an AVX2-only machine: sentence cosine to float32 0.963 on the tiny model). With 7-bit weights
/// a pair is at most 2 · 255 · 63 = 32,130 and never saturates, so an export gives the same vectors on every CPU.
const INT8_MAX: f32 = 63.0;

pub use crate::settings::Quantize;

#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Add a third output, `last_hidden_state` [batch, sequence, hidden] (tests and parity checks).
    pub last_hidden_state: bool,
    /// Quantise the encoder layers' MatMuls.
    pub quantize: Quantize,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportInfo {
    pub onnx_path: PathBuf,
    pub info_path: PathBuf,
    pub embedding_dim: usize,
    pub token_dim: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub max_seq_length: usize,
    pub opset: i64,
    pub has_dense: bool,
    pub has_token_head: bool,
    pub outputs: Vec<String>,
    pub quantize: Quantize,
    pub onnx_bytes: u64,
    pub node_count: usize,
}

/// One declared graph input or output in `onnx_model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// "int64" or "float32".
    pub dtype: String,
    /// Sizes (numbers) and symbolic dims (strings: "batch", "sequence").
    pub shape: Vec<serde_json::Value>,
}

/// `onnx_model.json`: what the ONNX directory holds, read by [`crate::embed::OrtEncoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnnxModelInfo {
    pub format: u32,
    /// The model file name, relative to this file's directory.
    pub model_file: String,
    pub opset: i64,
    pub ir_version: i64,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub embedding_dim: usize,
    pub token_dim: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub max_seq_length: usize,
    pub pooling: String,
    pub sentence_normalized: bool,
    pub dense: bool,
    /// false: `token_embeddings` is the per-token L2-normalised last hidden state.
    pub token_head: bool,
    pub tokenizer_files: Vec<String>,
    /// `"none"` (float32) or `"int8"` (absent in files written before quantisation existed: float32).
    #[serde(default)]
    pub quantize: Quantize,
    /// The architecture the graph was built for (`"bert"` or `"mpnet"`; absent in older files: `"bert"`).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// The id a batch is padded with (BERT's `[PAD]` 0, MPNet's `<pad>` 1; absent in older files: 0). The graph
    /// reads positions from the attention mask, so results do not depend on it; padding with the model's own id
    /// keeps the inputs what the model's tokenizer would give.
    #[serde(default)]
    pub pad_token_id: u32,
}

fn default_model_type() -> String {
    "bert".into()
}

impl OnnxModelInfo {
    pub fn read(dir: &Path) -> Result<OnnxModelInfo> {
        let path = dir.join(INFO_FILE);
        let text = std::fs::read_to_string(&path).at(&path)?;
        let info: OnnxModelInfo =
            serde_json::from_str(&text).map_err(|e| Error::data(&path, "(root)", e.to_string()))?;
        if info.format != INFO_FORMAT {
            return Err(Error::data(&path, "format", format!("{}, expected {INFO_FORMAT}", info.format)));
        }
        Ok(info)
    }

    pub fn has_output(&self, name: &str) -> bool {
        self.outputs.iter().any(|o| o.name == name)
    }
}

/// Export with default options (no debug outputs).
pub fn export_sentence_model(model_dir: &Path, out_path: &Path) -> Result<ExportInfo> {
    export_sentence_model_with(model_dir, out_path, &ExportOptions::default())
}

pub fn export_sentence_model_with(model_dir: &Path, out_path: &Path, opts: &ExportOptions) -> Result<ExportInfo> {
    let model = SentenceModel::load(model_dir)?;
    let tok = model_dir.join("tokenizer.json");
    if !tok.is_file() {
        return Err(Error::Usage(format!("{}: missing; the ONNX directory needs the tokenizer", tok.display())));
    }
    if !model.declares_normalize {
        tracing::warn!(
            "{}: modules.json has no Normalize module; the exported sentence_embedding is L2-normalised anyway",
            model_dir.display()
        );
    }
    let out_dir = match out_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = out_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", out_path.display())))?;
    std::fs::create_dir_all(&out_dir).at(&out_dir)?;

    let (proto, node_count) = build_model(&model, opts);
    let bytes = proto.encode_to_vec();
    write_atomic(out_path, &bytes)?;

    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let src = model_dir.join(name);
        if src.is_file() {
            let data = std::fs::read(&src).at(&src)?;
            write_atomic(&out_dir.join(name), &data)?;
            copied.push(name.to_string());
        }
    }

    let d = model.embedding_dim();
    let t = model.token_dim();
    let h = model.config.hidden_size;
    let spec = |name: &str, dtype: &str, shape: Vec<serde_json::Value>| TensorSpec {
        name: name.into(),
        dtype: dtype.into(),
        shape,
    };
    let bs = || vec![serde_json::json!("batch"), serde_json::json!("sequence")];
    let mut outputs = vec![
        spec(SENTENCE_EMBEDDING, "float32", vec!["batch".into(), d.into()]),
        spec(TOKEN_EMBEDDINGS, "float32", vec!["batch".into(), "sequence".into(), t.into()]),
    ];
    if opts.last_hidden_state {
        outputs.push(spec(LAST_HIDDEN_STATE, "float32", vec!["batch".into(), "sequence".into(), h.into()]));
    }
    let info = OnnxModelInfo {
        format: INFO_FORMAT,
        model_file: file_name,
        opset: OPSET,
        ir_version: IR_VERSION,
        inputs: [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS].iter().map(|n| spec(n, "int64", bs())).collect(),
        outputs: outputs.clone(),
        embedding_dim: d,
        token_dim: t,
        hidden_size: h,
        num_layers: model.config.num_hidden_layers,
        max_seq_length: model.max_seq_length,
        pooling: "mean".into(),
        sentence_normalized: true,
        dense: model.dense.is_some(),
        token_head: model.token_head.is_some(),
        tokenizer_files: copied,
        quantize: opts.quantize,
        model_type: if model.config.is_mpnet() { "mpnet" } else { "bert" }.into(),
        pad_token_id: model.config.pad_token_id as u32,
    };
    let info_path = out_dir.join(INFO_FILE);
    let json = serde_json::to_vec_pretty(&info).map_err(Error::internal)?;
    write_atomic(&info_path, &json)?;

    Ok(ExportInfo {
        onnx_path: out_path.to_path_buf(),
        info_path,
        embedding_dim: d,
        token_dim: t,
        hidden_size: h,
        num_layers: model.config.num_hidden_layers,
        max_seq_length: model.max_seq_length,
        opset: OPSET,
        has_dense: model.dense.is_some(),
        has_token_head: model.token_head.is_some(),
        outputs: outputs.into_iter().map(|o| o.name).collect(),
        quantize: opts.quantize,
        onnx_bytes: bytes.len() as u64,
        node_count,
    })
}

/// Symmetric per-column int8 quantisation of a row-major `[rows, cols]` matrix: `w ≈ q · scale[col]`
/// with `scale[col] = max|w[·, col]| / 63` (1 for an all-zero column) and `q` rounded to -63..=63 (see
/// [`INT8_MAX`]).
pub fn quantize_columns(w: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    debug_assert_eq!(w.len(), rows * cols);
    let mut scales = vec![0f32; cols];
    for r in 0..rows {
        for (c, s) in scales.iter_mut().enumerate() {
            *s = s.max(w[r * cols + c].abs());
        }
    }
    for s in scales.iter_mut() {
        *s = if *s > 0.0 { *s / INT8_MAX } else { 1.0 };
    }
    let q =
        w.iter().enumerate().map(|(i, &v)| (v / scales[i % cols]).round().clamp(-INT8_MAX, INT8_MAX) as i8).collect();
    (q, scales)
}

/// Zero point of the quantised activations: symmetric values -127..=127 stored as uint8 1..=255.
const ACTIVATION_ZERO_POINT: u8 = 128;
/// Largest magnitude of a quantised activation value.
const ACTIVATION_MAX: f32 = 127.0;
/// Floor of a token's activation scale (an all-zero row quantises to zeros with any positive scale).
const ACTIVATION_SCALE_MIN: f32 = 1e-30;

/// Dynamic symmetric quantisation of an activation `[batch, tokens, features]` with one scale per token,
/// `scale = max|x[t, ·]| / 127`, stored as uint8 `round(x / scale) + 128` (1..=255, zero point 128).
///
/// One scale per tensor (`DynamicQuantizeLinear`) lets a few outlier activations set the step for every
/// token: MPNet's feed-forward outputs reach |x| ≈ 100 where the mean is 0.1, and a per-tensor step of ~0.8
/// erases most of them (sentence cosine to sentence-transformers 0.77 on BoolQ passages, 0.99 with this
/// input quantised per token). The activation is viewed as `[batch·tokens, features]`
/// so that `QuantizeLinear` (per axis 0) does the divide, round, shift and cast in one pass.
///
/// Returns the uint8 values `[batch·tokens, features]`, the scales `[batch·tokens, 1]` and the shape
/// `[batch, tokens]` of `x`.
fn quantize_rows(g: &mut GraphBuilder, x: &str, features: usize) -> [String; 3] {
    let rows_shape = g.const_i64(&[2], &[-1, features as i64]);
    let x2 = g.op("Reshape", &[x, &rows_shape], vec![], &format!("{x}.rows"));
    let keep = || vec![attr_ints("axes", &[1]), attr_i("keepdims", 0)];
    let hi = g.op("ReduceMax", &[&x2], keep(), &format!("{x}.row_max"));
    let lo = g.op("ReduceMin", &[&x2], keep(), &format!("{x}.row_min"));
    let lo = g.op("Neg", &[&lo], vec![], &format!("{x}.row_neg_min"));
    let max = g.op("Max", &[&hi, &lo], vec![], &format!("{x}.row_absmax"));
    let inv_max = g.scalar(1.0 / ACTIVATION_MAX);
    let scale = g.op("Mul", &[&max, &inv_max], vec![], &format!("{x}.scale_raw"));
    let floor = g.scalar(ACTIVATION_SCALE_MIN);
    let scale = g.op("Max", &[&scale, &floor], vec![], &format!("{x}.scale"));
    let zp = g.scalar_u8(ACTIVATION_ZERO_POINT);
    let n = g.op("Shape", &[&scale], vec![], &format!("{x}.rows_n"));
    let zps = g.op("Expand", &[&zp, &n], vec![], &format!("{x}.zero_points"));
    let q = g.op("QuantizeLinear", &[&x2, &scale, &zps], vec![attr_i("axis", 0)], &format!("{x}.quantized"));
    let axis1 = g.const_i64(&[1], &[1]);
    let scale_col = g.op("Unsqueeze", &[&scale, &axis1], vec![], &format!("{x}.scale_col"));
    let bs = g.op("Shape", &[x], vec![attr_i("start", 0), attr_i("end", 2)], &format!("{x}.batch_tokens"));
    [q, scale_col, bs]
}

/// How [`Quantize::Int8`] quantises the input of a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Act {
    /// Never quantised: float32 `MatMul` (pooling Dense, the token head).
    Float,
    /// One scale per tensor: `DynamicQuantizeLinear`, which ONNX Runtime fuses with the `MatMulInteger`,
    /// the rescale and the bias into one int8 kernel (the fast path).
    Tensor,
    /// One scale per token ([`quantize_rows`]), for inputs with outliers; not fused, so slower.
    Token,
}

/// Emits the dense layers: float32 `MatMul + Add`, or (for the encoder layers under [`Quantize::Int8`])
/// the dynamically quantised form, quantising each activation once however many layers read it.
struct Linears {
    quantize: Quantize,
    /// (activation, [`Act`]) → its quantised form: for `Tensor` (uint8 values, scale, zero point) from
    /// `DynamicQuantizeLinear`; for `Token` (uint8 rows, their scales, the activation's `[batch, tokens]`)
    /// from [`quantize_rows`].
    quantized: HashMap<(String, Act), [String; 3]>,
}

impl Linears {
    fn new(quantize: Quantize) -> Self {
        Linears { quantize, quantized: HashMap::new() }
    }

    /// `x @ W^T + b` with W in HF layout (`scale` multiplies weight and bias). Under [`Quantize::Int8`] a
    /// layer whose input is not [`Act::Float`] stores W as int8 and quantises `x` as `act` says.
    fn apply(&mut self, g: &mut GraphBuilder, x: &str, lin: &Linear, hint: &str, scale: f32, act: Act) -> String {
        let mut wt = lin.weight_t();
        let mut b = lin.bias.clone();
        if scale != 1.0 {
            wt.iter_mut().for_each(|v| *v *= scale);
            b.iter_mut().for_each(|v| *v *= scale);
        }
        let (k, n) = (lin.in_features, lin.out_features);
        let act = if self.quantize == Quantize::Int8 { act } else { Act::Float };
        let mm = if act == Act::Float {
            let w = g.weight(&format!("{hint}.weight_t"), &[k, n], wt);
            g.op("MatMul", &[x, &w], vec![], &format!("{hint}.matmul"))
        } else {
            let [xq, xs, third] = self
                .quantized
                .entry((x.to_string(), act))
                .or_insert_with(|| match act {
                    Act::Token => quantize_rows(g, x, k),
                    _ => {
                        let out = g.op_multi(
                            "DynamicQuantizeLinear",
                            &[x],
                            vec![],
                            &[&format!("{x}.quantized"), &format!("{x}.scale"), &format!("{x}.zero_point")],
                        );
                        [out[0].clone(), out[1].clone(), out[2].clone()]
                    }
                })
                .clone();
            let (q, scales) = quantize_columns(&wt, k, n);
            let wq = g.weight_i8(&format!("{hint}.weight_t_int8"), &[k, n], q);
            let ws = g.weight(&format!("{hint}.weight_scale"), &[n], scales);
            let wzp = g.weight_i8(&format!("{hint}.weight_zero_point"), &[n], vec![0; n]);
            let xzp = if act == Act::Token { g.scalar_u8(ACTIVATION_ZERO_POINT) } else { third.clone() };
            let acc = g.op("MatMulInteger", &[&xq, &wq, &xzp, &wzp], vec![], &format!("{hint}.matmul_int32"));
            let acc = g.op("Cast", &[&acc], vec![attr_i("to", data_type::FLOAT as i64)], &format!("{hint}.matmul_f"));
            if act == Act::Token {
                let acc = g.op("Mul", &[&acc, &ws], vec![], &format!("{hint}.matmul_col_scaled"));
                let acc = g.op("Mul", &[&acc, &xs], vec![], &format!("{hint}.matmul_rows"));
                let n_dim = g.const_i64(&[1], &[n as i64]);
                let shape = g.op("Concat", &[&third, &n_dim], vec![attr_i("axis", 0)], &format!("{hint}.shape"));
                g.op("Reshape", &[&acc, &shape], vec![], &format!("{hint}.matmul"))
            } else {
                // the pattern ONNX Runtime fuses: MatMulInteger → Cast → Mul(activation scale × weight scales)
                let s = g.op("Mul", &[&xs, &ws], vec![], &format!("{hint}.matmul_scale"));
                g.op("Mul", &[&acc, &s], vec![], &format!("{hint}.matmul"))
            }
        };
        let bias = g.weight(&format!("{hint}.bias"), &[n], b);
        g.op("Add", &[&mm, &bias], vec![], hint)
    }
}

fn layer_norm(g: &mut GraphBuilder, x: &str, ln: &LayerNorm, eps: f32, hint: &str) -> String {
    let n = ln.gamma.len();
    let gamma = g.weight(&format!("{hint}.weight"), &[n], ln.gamma.clone());
    let beta = g.weight(&format!("{hint}.bias"), &[n], ln.beta.clone());
    g.op("LayerNormalization", &[x, &gamma, &beta], vec![attr_i("axis", -1), attr_f("epsilon", eps)], hint)
}

/// `x / max(||x||_2, 1e-12)` over the last axis (torch.nn.functional.normalize).
fn l2_normalize_into(g: &mut GraphBuilder, x: &str, out: &str) {
    let last = g.const_i64(&[1], &[-1]);
    let sq = g.op("Mul", &[x, x], vec![], &format!("{out}.sq"));
    let ss = g.op("ReduceSum", &[&sq, &last], vec![attr_i("keepdims", 1)], &format!("{out}.sumsq"));
    let norm = g.op("Sqrt", &[&ss], vec![], &format!("{out}.norm"));
    let eps = g.scalar(NORM_EPS);
    let norm = g.op("Max", &[&norm, &eps], vec![], &format!("{out}.norm_clamped"));
    g.op_into("Div", &[x, &norm], vec![], out);
}

/// Builds the whole graph: embeddings, attention bias, the encoder layers, then the sentence and token
/// outputs; returns the model and its node count.
fn build_model(m: &SentenceModel, opts: &ExportOptions) -> (ModelProto, usize) {
    let mut g = GraphBuilder::new();
    let mut lin = Linears::new(opts.quantize);
    for n in [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS, SENTENCE_EMBEDDING, TOKEN_EMBEDDINGS, LAST_HIDDEN_STATE] {
        g.reserve(n);
    }
    let (mut x, seq) = embeddings(&mut g, m);
    let (mask_f, attn_bias) = attention_bias(&mut g, m, &seq);
    let consts = LayerConsts::new(&mut g, &m.config);
    for (l, layer) in m.layers.iter().enumerate() {
        x = encoder_layer(&mut g, &mut lin, &consts, layer, &x, &attn_bias, &format!("l{l}"));
    }
    if opts.last_hidden_state {
        g.op_into("Identity", &[&x], vec![], LAST_HIDDEN_STATE);
    }
    sentence_embedding(&mut g, &mut lin, m, &x, &mask_f);
    token_embeddings(&mut g, &mut lin, m, &x);
    let node_count = g.node_count();
    let graph = g.finish("coltrast_sentence_model", graph_inputs(), graph_outputs(m, opts));
    (model_proto(m, opts, graph), node_count)
}

/// The embeddings, layer-normalised (BERT: word + token type + position; MPNet: word + position), and the
/// sequence length `Shape(input_ids)[1]`.
fn embeddings(g: &mut GraphBuilder, m: &SentenceModel) -> (String, String) {
    let c = &m.config;
    let word = g.weight("embeddings.word_embeddings.weight", &[c.vocab_size, c.hidden_size], m.word_embeddings.clone());
    let pos = g.weight(
        "embeddings.position_embeddings.weight",
        &[c.max_position_embeddings, c.hidden_size],
        m.position_embeddings.clone(),
    );
    let we = g.op("Gather", &[&word, INPUT_IDS], vec![attr_i("axis", 0)], "emb.word");
    let seq = g.op("Shape", &[INPUT_IDS], vec![attr_i("start", 1), attr_i("end", 2)], "emb.seq_len");
    let sum =
        if c.is_mpnet() { mpnet_embedding_sum(g, c, &we, &pos) } else { bert_embedding_sum(g, m, &we, &pos, &seq) };
    let x = layer_norm(g, &sum, &m.embeddings_norm, c.layer_norm_eps as f32, "emb.norm");
    (x, seq)
}

/// MPNet's embedding sum: word + position, the positions counted over the attention mask from
/// `pad_token_id + 1` (no token types).
fn mpnet_embedding_sum(g: &mut GraphBuilder, c: &BertConfig, we: &str, pos: &str) -> String {
    // MPNet: no token types; positions as transformers' create_position_ids_from_input_ids,
    // `cumsum(mask) * mask + pad_token_id`, counted over the attention mask (the same as over
    // `input_ids != pad` for right padding, and independent of the id a caller pads with).
    let axis = g.const_i64(&[], &[1]);
    let counted = g.op("CumSum", &[ATTENTION_MASK, &axis], vec![], "emb.position_count");
    let counted = g.op("Mul", &[&counted, ATTENTION_MASK], vec![], "emb.position_count_masked");
    let pad = g.const_i64(&[], &[c.pad_token_id as i64]);
    let ids = g.op("Add", &[&counted, &pad], vec![], "emb.position_ids");
    let pe = g.op("Gather", &[pos, &ids], vec![attr_i("axis", 0)], "emb.position");
    g.op("Add", &[we, &pe], vec![], "emb.sum")
}

/// BERT's embedding sum: word + token type + the first `seq` rows of the position table.
fn bert_embedding_sum(g: &mut GraphBuilder, m: &SentenceModel, we: &str, pos: &str, seq: &str) -> String {
    let c = &m.config;
    let ttype = g.weight(
        "embeddings.token_type_embeddings.weight",
        &[c.type_vocab_size, c.hidden_size],
        m.token_type_embeddings.clone(),
    );
    let zero = g.const_i64(&[1], &[0]);
    let pe = g.op("Slice", &[pos, &zero, seq, &zero], vec![], "emb.position");
    let te = g.op("Gather", &[&ttype, TOKEN_TYPE_IDS], vec![attr_i("axis", 0)], "emb.token_type");
    let s1 = g.op("Add", &[we, &te], vec![], "emb.sum1");
    g.op("Add", &[&s1, &pe], vec![], "emb.sum")
}

/// The float attention mask `[batch, sequence]` and the additive bias of the attention scores: the mask's
/// `(1 - mask) * -1e9` `[batch, 1, 1, sequence]`, plus MPNet's relative position bias.
fn attention_bias(g: &mut GraphBuilder, m: &SentenceModel, seq: &str) -> (String, String) {
    let mask_f = g.op("Cast", &[ATTENTION_MASK], vec![attr_i("to", data_type::FLOAT as i64)], "mask.f");
    let axes12 = g.const_i64(&[2], &[1, 2]);
    let m4 = g.op("Unsqueeze", &[&mask_f, &axes12], vec![], "mask.b11s");
    let one = g.scalar(1.0);
    let inv = g.op("Sub", &[&one, &m4], vec![], "mask.inv");
    let neg = g.scalar(MASK_NEG);
    let mask_bias = g.op("Mul", &[&inv, &neg], vec![], "mask.bias");
    let attn_bias = match &m.relative_attention_bias {
        Some(table) => relative_position_bias(g, m, table, seq, &mask_bias),
        None => mask_bias.clone(),
    };
    (mask_f, attn_bias)
}

/// MPNet: `mask_bias` plus the relative position bias `[1, heads, s, s]` that all layers share. The bucket of
/// every (query, key) pair up to max_seq_length is a constant (it depends only on key - query); the learnt
/// table `[buckets, heads]` is gathered at run time, so it stays one named initializer.
fn relative_position_bias(
    g: &mut GraphBuilder,
    m: &SentenceModel,
    table: &[f32],
    seq: &str,
    mask_bias: &str,
) -> String {
    let c = &m.config;
    let n = m.max_seq_length;
    let buckets: Vec<i64> = (0..n).flat_map(|i| (0..n).map(move |j| mpnet_bucket(j as i64 - i as i64))).collect();
    let all = g.const_i64(&[n, n], &buckets);
    let table = g.weight(
        "encoder.relative_attention_bias.weight",
        &[c.relative_attention_num_buckets, c.num_attention_heads],
        table.to_vec(),
    );
    let starts = g.const_i64(&[2], &[0, 0]);
    let ends = g.op("Concat", &[seq, seq], vec![attr_i("axis", 0)], "relpos.ends");
    let axes = g.const_i64(&[2], &[0, 1]);
    let idx = g.op("Slice", &[&all, &starts, &ends, &axes], vec![], "relpos.buckets");
    let values = g.op("Gather", &[&table, &idx], vec![attr_i("axis", 0)], "relpos.values");
    let values = g.op("Transpose", &[&values], vec![attr_ints("perm", &[2, 0, 1])], "relpos.heads");
    let axis0 = g.const_i64(&[1], &[0]);
    let values = g.op("Unsqueeze", &[&values, &axis0], vec![], "relpos.bias");
    g.op("Add", &[&values, mask_bias], vec![], "attn.bias")
}

/// What every encoder layer shares: the head reshapes, the attention scale, the GELU constants and the
/// LayerNorm epsilon.
struct LayerConsts {
    /// `[0, 0, heads, head_dim]`: `[b, s, h]` → `[b, s, heads, head_dim]`.
    split_heads: String,
    /// `[0, 0, h]`: back to `[b, s, h]`.
    merge_heads: String,
    /// 1/√head_dim, folded into the query weights.
    scale: f32,
    sqrt2: String,
    half: String,
    one: String,
    eps: f32,
}

impl LayerConsts {
    /// Creates the shared constants (before the first layer's weights, so the initializers keep their order).
    fn new(g: &mut GraphBuilder, c: &BertConfig) -> LayerConsts {
        let dh = c.head_dim();
        let split_heads = g.const_i64(&[4], &[0, 0, c.num_attention_heads as i64, dh as i64]);
        let merge_heads = g.const_i64(&[3], &[0, 0, c.hidden_size as i64]);
        let sqrt2 = g.scalar(std::f32::consts::SQRT_2);
        let half = g.scalar(0.5);
        // made with the attention mask already (constants are shared): this only looks it up
        let one = g.scalar(1.0);
        LayerConsts {
            split_heads,
            merge_heads,
            scale: 1.0 / (dh as f32).sqrt(),
            sqrt2,
            half,
            one,
            eps: c.layer_norm_eps as f32,
        }
    }
}

/// One encoder layer named `p`: self-attention, output dense + residual + LayerNorm, then intermediate dense +
/// GELU, output dense + residual + LayerNorm; returns its output.
fn encoder_layer(
    g: &mut GraphBuilder,
    lin: &mut Linears,
    k: &LayerConsts,
    layer: &EncoderLayer,
    x: &str,
    attn_bias: &str,
    p: &str,
) -> String {
    let ctx = self_attention(g, lin, k, layer, x, attn_bias, p);
    let a = lin.apply(g, &ctx, &layer.attn_out, &format!("{p}.attn_out"), 1.0, Act::Tensor);
    let a = g.op("Add", &[&a, x], vec![], &format!("{p}.attn_residual"));
    let h1 = layer_norm(g, &a, &layer.attn_norm, k.eps, &format!("{p}.attn_norm"));
    let i = lin.apply(g, &h1, &layer.intermediate, &format!("{p}.inter"), 1.0, Act::Tensor);
    let act = gelu(g, k, &i, p);
    // the GELU output holds the outliers (MPNet: |x| up to ~100 where the mean is 0.1): one scale per token
    let o = lin.apply(g, &act, &layer.output, &format!("{p}.out"), 1.0, Act::Token);
    let o = g.op("Add", &[&o, &h1], vec![], &format!("{p}.out_residual"));
    layer_norm(g, &o, &layer.out_norm, k.eps, &format!("{p}.out_norm"))
}

/// Multi-head scaled dot-product attention of layer `p` over `x` (Q/K/V projections, scores + `attn_bias`,
/// Softmax); returns the context with the heads merged back, `[b, s, h]`.
fn self_attention(
    g: &mut GraphBuilder,
    lin: &mut Linears,
    k: &LayerConsts,
    layer: &EncoderLayer,
    x: &str,
    attn_bias: &str,
    p: &str,
) -> String {
    let q = lin.apply(g, x, &layer.query, &format!("{p}.q"), k.scale, Act::Tensor);
    let kk = lin.apply(g, x, &layer.key, &format!("{p}.k"), 1.0, Act::Tensor);
    let v = lin.apply(g, x, &layer.value, &format!("{p}.v"), 1.0, Act::Tensor);
    let q = g.op("Reshape", &[&q, &k.split_heads], vec![], &format!("{p}.q_heads"));
    let q = g.op("Transpose", &[&q], vec![attr_ints("perm", &[0, 2, 1, 3])], &format!("{p}.q_t"));
    let kk = g.op("Reshape", &[&kk, &k.split_heads], vec![], &format!("{p}.k_heads"));
    let kk = g.op("Transpose", &[&kk], vec![attr_ints("perm", &[0, 2, 3, 1])], &format!("{p}.k_t"));
    let v = g.op("Reshape", &[&v, &k.split_heads], vec![], &format!("{p}.v_heads"));
    let v = g.op("Transpose", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])], &format!("{p}.v_t"));
    let scores = g.op("MatMul", &[&q, &kk], vec![], &format!("{p}.scores"));
    let scores = g.op("Add", &[&scores, attn_bias], vec![], &format!("{p}.scores_masked"));
    let probs = g.op("Softmax", &[&scores], vec![attr_i("axis", -1)], &format!("{p}.probs"));
    let ctx = g.op("MatMul", &[&probs, &v], vec![], &format!("{p}.ctx"));
    let ctx = g.op("Transpose", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])], &format!("{p}.ctx_t"));
    g.op("Reshape", &[&ctx, &k.merge_heads], vec![], &format!("{p}.ctx_merged"))
}

/// Exact GELU of layer `p`: `0.5 * x * (1 + erf(x / sqrt(2)))`.
fn gelu(g: &mut GraphBuilder, k: &LayerConsts, x: &str, p: &str) -> String {
    let d = g.op("Div", &[x, &k.sqrt2], vec![], &format!("{p}.gelu_div"));
    let e = g.op("Erf", &[&d], vec![], &format!("{p}.gelu_erf"));
    let e1 = g.op("Add", &[&e, &k.one], vec![], &format!("{p}.gelu_add"));
    let xe = g.op("Mul", &[x, &e1], vec![], &format!("{p}.gelu_mul"));
    g.op("Mul", &[&xe, &k.half], vec![], &format!("{p}.gelu"))
}

/// `sentence_embedding`: mean pooling over the attention mask, the Dense module (if any), L2-normalised.
fn sentence_embedding(g: &mut GraphBuilder, lin: &mut Linears, m: &SentenceModel, x: &str, mask_f: &str) {
    let mut pooled = mean_pool(g, x, mask_f);
    if let Some(dense) = &m.dense {
        pooled = lin.apply(g, &pooled, &dense.linear, "dense", 1.0, Act::Float);
        if dense.activation == DenseActivation::Tanh {
            pooled = g.op("Tanh", &[&pooled], vec![], "dense.tanh");
        }
    }
    l2_normalize_into(g, &pooled, SENTENCE_EMBEDDING);
}

/// Mean of the hidden states `x` over the positions the float mask `[batch, sequence]` keeps.
fn mean_pool(g: &mut GraphBuilder, x: &str, mask_f: &str) -> String {
    let axis2 = g.const_i64(&[1], &[2]);
    let axis1 = g.const_i64(&[1], &[1]);
    let m3 = g.op("Unsqueeze", &[mask_f, &axis2], vec![], "pool.mask");
    let masked = g.op("Mul", &[x, &m3], vec![], "pool.masked");
    let summed = g.op("ReduceSum", &[&masked, &axis1], vec![attr_i("keepdims", 0)], "pool.sum");
    let count = g.op("ReduceSum", &[&m3, &axis1], vec![attr_i("keepdims", 0)], "pool.count");
    let pool_eps = g.scalar(POOL_EPS);
    let count = g.op("Max", &[&count, &pool_eps], vec![], "pool.count_clamped");
    g.op("Div", &[&summed, &count], vec![], "pool.mean")
}

/// `token_embeddings`: the token head's output (without one, the hidden state itself), L2-normalised per token.
fn token_embeddings(g: &mut GraphBuilder, lin: &mut Linears, m: &SentenceModel, x: &str) {
    let tok = match &m.token_head {
        Some(head) => lin.apply(g, x, head, "token_head", 1.0, Act::Float),
        None => x.to_string(),
    };
    l2_normalize_into(g, &tok, TOKEN_EMBEDDINGS);
}

/// The graph inputs: `input_ids`, `attention_mask`, `token_type_ids`, int64 `[batch, sequence]`.
fn graph_inputs() -> Vec<ValueInfoProto> {
    let bs = || vec![Dim::from("batch"), Dim::from("sequence")];
    [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS]
        .iter()
        .map(|n| ValueInfoProto::tensor(n, data_type::INT64, &bs()))
        .collect()
}

/// The graph outputs: `sentence_embedding`, `token_embeddings` and, when asked for, `last_hidden_state`.
fn graph_outputs(m: &SentenceModel, opts: &ExportOptions) -> Vec<ValueInfoProto> {
    let mut outputs = vec![
        ValueInfoProto::tensor(
            SENTENCE_EMBEDDING,
            data_type::FLOAT,
            &["batch".into(), (m.embedding_dim() as i64).into()],
        ),
        ValueInfoProto::tensor(
            TOKEN_EMBEDDINGS,
            data_type::FLOAT,
            &["batch".into(), "sequence".into(), (m.token_dim() as i64).into()],
        ),
    ];
    if opts.last_hidden_state {
        outputs.push(ValueInfoProto::tensor(
            LAST_HIDDEN_STATE,
            data_type::FLOAT,
            &["batch".into(), "sequence".into(), (m.config.hidden_size as i64).into()],
        ));
    }
    outputs
}

/// The model around `graph`: IR version, opset, producer and the metadata (dims, pooling, head, quantisation,
/// model type).
fn model_proto(m: &SentenceModel, opts: &ExportOptions, graph: GraphProto) -> ModelProto {
    let meta = |k: &str, v: String| StringStringEntryProto { key: k.into(), value: v };
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "coltrast".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: vec![
            meta("embedding_dim", m.embedding_dim().to_string()),
            meta("token_dim", m.token_dim().to_string()),
            meta("max_seq_length", m.max_seq_length.to_string()),
            meta("pooling", "mean".into()),
            meta("token_head", m.token_head.is_some().to_string()),
            meta("quantize", opts.quantize.as_str().into()),
            meta("model_type", m.config.model_type.clone().unwrap_or_else(|| "bert".into())),
        ],
        ..Default::default()
    }
}
