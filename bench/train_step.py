"""PyTorch eager baseline of one ColTrast training step, on the batches `torch/examples/train_step_bench.rs` dumped.

Same model (transformers' BertModel or MPNetModel on the base model dir, as its config.json's model_type
says; no pooler; SDPA attention where transformers has it for the architecture (BERT), dropout as in its config), same heads (Dense initialised to the identity, the Rust side's initial token head), same batches and
padding (queries and the batch's distinct documents each padded to their longest text, truncation at
max_seq_length), same loss (InfoNCE with the dumped candidate masks and labels; MaxSim BCE on the dumped
pairs), same optimiser (torch.optim.AdamW, weight decay on weight matrices only), clipping at max_grad_norm.
Prints one JSON line like the Rust side. With --fused, AdamW runs with `fused=True` (PyTorch's fused CPU
kernel, not the default), shown for reference.

Usage: BENCH_PY bench/train_step.py DUMP_DIR [--fused]
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

dump = sys.argv[1]
fused = "--fused" in sys.argv[2:]
spec = json.load(open(os.path.join(dump, "batches.json")))
torch.set_num_threads(spec["threads"])
torch.manual_seed(42)

model_type = AutoConfig.from_pretrained(spec["model_dir"]).model_type
if model_type not in ("bert", "mpnet"):
    raise SystemExit(f"{spec['model_dir']}: model_type {model_type!r}, expected bert or mpnet")
extra = {"attn_implementation": "sdpa"} if model_type == "bert" else {}
model = AutoModel.from_pretrained(spec["model_dir"], add_pooling_layer=False, **extra)
tok = AutoTokenizer.from_pretrained(spec["model_dir"])
H = model.config.hidden_size
dense = torch.nn.Linear(H, spec["embedding_dim"])
token = torch.nn.Linear(H, spec["token_dim"])
with torch.no_grad():
    dense.weight.copy_(torch.eye(spec["embedding_dim"], H))
    dense.bias.zero_()
    head = load_file(os.path.join(dump, "token_head.safetensors"))
    token.weight.copy_(head["weight"])
    token.bias.copy_(head["bias"])

named = [(f"encoder.{n}", p) for n, p in model.named_parameters()]
named += [("dense.linear.weight", dense.weight), ("dense.linear.bias", dense.bias)]
named += [("token_head.weight", token.weight), ("token_head.bias", token.bias)]
decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": spec["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
    lr=spec["learning_rate"], betas=(0.9, 0.999), eps=1e-8, fused=True if fused else None,
)
params = [p for _, p in named]


def tokenize(texts):
    return tok(texts, padding=True, truncation=True, max_length=spec["max_seq_length"], return_tensors="pt")


# Tokenised once, outside the timed steps (the Rust side tokenises every text once before training too).
batches = []
for b in spec["batches"]:
    batches.append({
        "q": tokenize(b["queries"]),
        "d": tokenize(b["docs"]),
        "labels": torch.tensor(b["labels"]),
        "cand": torch.tensor(b["candidates"]),
        "qi": torch.tensor(b["late_query"]),
        "di": torch.tensor(b["late_doc"]),
        "y": torch.tensor(b["late_label"], dtype=torch.float32),
    })


def encode(inputs):
    h = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"]
    m = mask.unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(dense(pooled), p=2, dim=-1), F.normalize(token(h), p=2, dim=-1), mask


def loss_of(b):
    qp, qt, qm = encode(b["q"])
    dp, dt, dm = encode(b["d"])
    logits = (qp @ dp.T) / spec["temperature"]
    logits = logits.masked_fill(~b["cand"], -1e9)
    lc = F.cross_entropy(logits, b["labels"])
    q = qt[b["qi"]]
    qmask = qm[b["qi"]].to(q.dtype)
    d = dt[b["di"]]
    dpad = (dm[b["di"]] == 0).unsqueeze(1)
    sim = torch.bmm(q, d.transpose(1, 2)).masked_fill(dpad, -1e4)
    score = (sim.amax(2) * qmask).sum(1) / qmask.sum(1).clamp(min=1.0)
    ll = F.binary_cross_entropy_with_logits(score * spec["maxsim_scale"] + spec["maxsim_shift"], b["y"])
    return spec["contrastive_weight"] * lc + spec["late_interaction_weight"] * ll, lc, ll


model.eval()
with torch.no_grad():
    eval_loss = [float(x) for x in loss_of(batches[0])]
model.train()

ms = []
phases = [0.0] * 4
for b in batches:
    t0 = time.perf_counter()
    opt.zero_grad()
    total, _, _ = loss_of(b)
    total.item()
    t1 = time.perf_counter()
    total.backward()
    t2 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(params, spec["max_grad_norm"])
    t3 = time.perf_counter()
    opt.step()
    t4 = time.perf_counter()
    if len(ms) >= spec["warmup"]:
        for i, d in enumerate([t1 - t0, t2 - t1, t3 - t2, t4 - t3]):
            phases[i] += d * 1000.0 / spec["steps"]
    ms.append((time.perf_counter() - t0) * 1000.0)
timed = ms[spec["warmup"]:]
lens = [(int(b["q"]["input_ids"].shape[1]), int(b["d"]["input_ids"].shape[1]), int(b["d"]["input_ids"].shape[0]))
        for b in batches]
print(json.dumps({
    "system": f"PyTorch {torch.__version__} eager" + (", AdamW fused=True" if fused else ""),
    "threads": torch.get_num_threads(), "step_ms": timed,
    "median_ms": statistics.median(timed), "padded_lengths": lens, "eval_loss_first_batch": eval_loss,
    "phases_ms": dict(zip(["forward_loss", "backward", "clip", "optimizer"], phases)),
}))
