//! A Llama-architecture decoder (SmolLM2 is one) in libtorch, with its weights from a GGUF file.
//!
//! Per layer: RMSNorm → grouped-query attention with rotary position embeddings → residual; RMSNorm →
//! SwiGLU feed-forward (`down(silu(gate(x)) · up(x))`) → residual. A final RMSNorm and the output projection
//! (the token embedding when the file has no `output.weight`: tied embeddings) give the next-token logits.
//!
//! Rotary embeddings rotate adjacent pairs `(x[2i], x[2i+1])` by `pos · base^(−2i/d)`: llama.cpp's converter
//! permutes the query and key weights of Hugging Face checkpoints so that this "normal" rotation equals
//! transformers' rotate-half one, so a GGUF file's weights are used as they are.
//!
//! Decoding keeps a key/value cache per layer; prompts in a batch are left-padded, and an additive mask hides
//! padding (and the future, during the prompt pass). Positions count real tokens only, so a prompt's
//! result does not depend on what it is batched with.

use tch::{Kind, Tensor};

use super::gguf::{Gguf, GgufError};

/// The hyper-parameters in a GGUF file's `llama.*` metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub n_layer: usize,
    pub dim: i64,
    pub n_head: i64,
    pub n_kv_head: i64,
    pub ffn_dim: i64,
    pub rms_eps: f64,
    pub rope_base: f64,
    pub vocab: i64,
    pub context: i64,
}

impl LlamaConfig {
    pub fn from_gguf(g: &Gguf) -> Result<Self, GgufError> {
        let arch = g.str("general.architecture")?.to_string();
        if arch != "llama" {
            return Err(GgufError::Metadata {
                path: g.path().to_path_buf(),
                key: "general.architecture".into(),
                why: format!("`{arch}` is not supported (only `llama`, as SmolLM2)"),
            });
        }
        let n_head = g.int("llama.attention.head_count")?;
        let vocab = match g.int("llama.vocab_size") {
            Ok(v) => v,
            Err(_) => g.strings("tokenizer.ggml.tokens")?.len() as i64,
        };
        let cfg = LlamaConfig {
            n_layer: g.int("llama.block_count")? as usize,
            dim: g.int("llama.embedding_length")?,
            n_head,
            n_kv_head: g.int("llama.attention.head_count_kv").unwrap_or(n_head),
            ffn_dim: g.int("llama.feed_forward_length")?,
            rms_eps: g.float("llama.attention.layer_norm_rms_epsilon")?,
            rope_base: g.float("llama.rope.freq_base").unwrap_or(10_000.0),
            vocab,
            context: g.int("llama.context_length")?,
        };
        if cfg.n_head <= 0 || cfg.dim % cfg.n_head != 0 || cfg.n_kv_head <= 0 || cfg.n_head % cfg.n_kv_head != 0 {
            return Err(GgufError::Metadata {
                path: g.path().to_path_buf(),
                key: "llama.attention.head_count".into(),
                why: format!(
                    "{} heads, {} key/value heads and width {} do not divide",
                    cfg.n_head, cfg.n_kv_head, cfg.dim
                ),
            });
        }
        Ok(cfg)
    }

    pub fn head_dim(&self) -> i64 {
        self.dim / self.n_head
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Per-layer key and value cache: buffers `[batch, kv_heads, capacity, head_dim]` of which the first `len`
/// positions are filled. A buffer grows by doubling, so appending a token copies nothing else.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: i64,
}

impl KvCache {
    pub fn len(&self) -> i64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `k`, `v` `[b, kv, t, hd]` to layer `i`'s buffers; returns views of everything cached so far.
    fn append(&mut self, i: usize, k: &Tensor, v: &Tensor) -> (Tensor, Tensor) {
        let t = k.size()[2];
        let need = self.len + t;
        let slot = &mut self.layers[i];
        let cap = slot.as_ref().map(|(kb, _)| kb.size()[2]).unwrap_or(0);
        if need > cap {
            let mut size = k.size();
            size[2] = need.max(2 * cap).max(64);
            let (kb, vb) = (
                Tensor::zeros(size.as_slice(), (k.kind(), k.device())),
                Tensor::zeros(size.as_slice(), (v.kind(), v.device())),
            );
            if let Some((ok, ov)) = slot.take() {
                kb.narrow(2, 0, self.len).copy_(&ok.narrow(2, 0, self.len));
                vb.narrow(2, 0, self.len).copy_(&ov.narrow(2, 0, self.len));
            }
            *slot = Some((kb, vb));
        }
        let (kb, vb) = slot.as_ref().expect("allocated above");
        kb.narrow(2, self.len, t).copy_(k);
        vb.narrow(2, self.len, t).copy_(v);
        (kb.narrow(2, 0, need), vb.narrow(2, 0, need))
    }
}

pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    out_norm: Tensor,
    lm_head: Tensor,
    inv_freq: Tensor,
}

fn load(g: &Gguf, name: &str, expect: &[i64]) -> Result<Tensor, GgufError> {
    let (values, shape) = g.tensor_f32(name)?;
    if shape != expect {
        return Err(GgufError::Tensor {
            path: g.path().to_path_buf(),
            name: name.into(),
            why: format!("shape {shape:?}, expected {expect:?} from the metadata"),
        });
    }
    Ok(Tensor::from_slice(&values).view(expect))
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let var = x.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
    x * (var + eps).rsqrt() * w
}

impl Llama {
    /// Load every weight of `g` (dequantized to float32).
    pub fn load(g: &Gguf) -> Result<Self, GgufError> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let (d, kv, f, v) = (cfg.dim, cfg.n_kv_head * cfg.head_dim(), cfg.ffn_dim, cfg.vocab);
        let embed = load(g, "token_embd.weight", &[v, d])?;
        let lm_head =
            if g.has_tensor("output.weight") { load(g, "output.weight", &[v, d])? } else { embed.shallow_clone() };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: load(g, &n("attn_norm"), &[d])?,
                wq: load(g, &n("attn_q"), &[d, d])?,
                wk: load(g, &n("attn_k"), &[kv, d])?,
                wv: load(g, &n("attn_v"), &[kv, d])?,
                wo: load(g, &n("attn_output"), &[d, d])?,
                ffn_norm: load(g, &n("ffn_norm"), &[d])?,
                gate: load(g, &n("ffn_gate"), &[f, d])?,
                up: load(g, &n("ffn_up"), &[f, d])?,
                down: load(g, &n("ffn_down"), &[d, f])?,
            });
        }
        let out_norm = load(g, "output_norm.weight", &[d])?;
        let half = cfg.head_dim() / 2;
        let exps = Tensor::arange(half, (Kind::Float, tch::Device::Cpu)) * (-2.0 / cfg.head_dim() as f64);
        let inv_freq = (exps * cfg.rope_base.ln()).exp();
        Ok(Llama { cfg, embed, layers, out_norm, lm_head, inv_freq })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache { layers: (0..self.cfg.n_layer).map(|_| None).collect(), len: 0 }
    }

    /// Rotate adjacent pairs of `x` `[b, h, t, hd]` by the angles of `positions` `[b, t]`.
    fn rope(&self, x: &Tensor, positions: &Tensor) -> Tensor {
        let size = x.size();
        let (b, h, t, hd) = (size[0], size[1], size[2], size[3]);
        let angles = positions.to_kind(Kind::Float).unsqueeze(-1) * self.inv_freq.view([1, 1, -1]); // [b, t, hd/2]
        let (cos, sin) = (angles.cos().unsqueeze(1), angles.sin().unsqueeze(1)); // [b, 1, t, hd/2]
        let pairs = x.view([b, h, t, hd / 2, 2]);
        let (x0, x1) = (pairs.select(-1, 0), pairs.select(-1, 1));
        let r0 = &x0 * &cos - &x1 * &sin;
        let r1 = &x0 * &sin + &x1 * &cos;
        Tensor::stack(&[r0, r1], -1).view([b, h, t, hd])
    }

    /// Run `tokens` `[b, t]` (new positions only) through the model, appending to `cache`; `valid` `[b, seen +
    /// t]` is 1 on real tokens (cached and new) and 0 on padding. Returns the logits of the last new position,
    /// `[b, vocab]`.
    pub fn forward(&self, tokens: &Tensor, valid: &Tensor, cache: &mut KvCache) -> Tensor {
        let _guard = tch::no_grad_guard();
        let size = tokens.size();
        let (b, t) = (size[0], size[1]);
        let seen = cache.len();
        let total = seen + t;
        let (nh, nkv, hd) = (self.cfg.n_head, self.cfg.n_kv_head, self.cfg.head_dim());
        // positions count real tokens only
        let positions = (valid.cumsum(1, Kind::Int64) - 1).clamp_min(0).narrow(1, seen, t);
        // additive mask [b, 1, t, total]: padding keys hidden; during a multi-token pass, the future too
        let key_ok = valid.ne(0).view([b, 1, 1, total]);
        let q_pos = Tensor::arange_start(seen, total, (Kind::Int64, tch::Device::Cpu)).view([1, 1, t, 1]);
        let k_pos = Tensor::arange(total, (Kind::Int64, tch::Device::Cpu)).view([1, 1, 1, total]);
        let allowed = key_ok.logical_and(&k_pos.le_tensor(&q_pos));
        let bias =
            Tensor::zeros([b, 1, t, total], (Kind::Float, tch::Device::Cpu)).masked_fill(&allowed.logical_not(), -1e9);
        let scale = 1.0 / (hd as f64).sqrt();
        let mut x = self.embed.index_select(0, &tokens.view([-1])).view([b, t, self.cfg.dim]);
        let rep = nh / nkv;
        let bias = bias.unsqueeze(2); // [b, 1, 1, t, total]: the same for each query head of a key/value head
        for (i, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, self.cfg.rms_eps);
            let q = h.matmul(&layer.wq.tr()).view([b, t, nh, hd]).transpose(1, 2);
            let k = h.matmul(&layer.wk.tr()).view([b, t, nkv, hd]).transpose(1, 2);
            let v = h.matmul(&layer.wv.tr()).view([b, t, nkv, hd]).transpose(1, 2);
            let q = self.rope(&q, &positions);
            let k = self.rope(&k, &positions);
            let (k, v) = cache.append(i, &k, &v);
            // grouped-query attention without copying keys and values: query head h reads key/value head
            // h / rep, so the rep query heads of one key/value head are stacked as rows of one matmul
            let q = q.reshape([b, nkv, rep * t, hd]);
            let scores = (q.matmul(&k.transpose(-2, -1)) * scale).view([b, nkv, rep, t, total]) + &bias;
            let probs = scores.softmax(-1, Kind::Float).view([b, nkv, rep * t, total]);
            let attn = probs.matmul(&v).view([b, nh, t, hd]);
            let attn = attn.transpose(1, 2).contiguous().view([b, t, self.cfg.dim]);
            x = x + attn.matmul(&layer.wo.tr());
            let h = rms_norm(&x, &layer.ffn_norm, self.cfg.rms_eps);
            let ff = h.matmul(&layer.gate.tr()).silu() * h.matmul(&layer.up.tr());
            x = x + ff.matmul(&layer.down.tr());
        }
        cache.len = total;
        let last = x.select(1, t - 1);
        rms_norm(&last, &self.out_norm, self.cfg.rms_eps).matmul(&self.lm_head.tr())
    }
}
