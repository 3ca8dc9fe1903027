# Simulates coltrast's int8 export schemes in PyTorch (7-bit per-column weights; activations per tensor,
# per token (QMODE=token) or per token only for the GELU output (QMODE=hybrid)) and prints the sentence cosine to float32.
# Usage: BENCH_PY bench/int8_sim.py MODEL_DIR [N]  (env BOOLQ, BS, QMODE)
import json, sys, os, itertools, torch, numpy as np
from transformers import AutoModel, AutoTokenizer
torch.set_num_threads(2)
mdir = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 64
bs = int(os.environ.get("BS", 16))
corpus = [json.loads(l)["text"] for l in itertools.islice(open(os.path.join(os.environ.get("BOOLQ", "../shared/data/boolq"), "corpus.jsonl")), n)]
tok = AutoTokenizer.from_pretrained(mdir); model = AutoModel.from_pretrained(mdir).eval()
maxlen = json.load(open(os.path.join(mdir, "sentence_bert_config.json")))["max_seq_length"]
mode = {}  # name -> bool quantize
stats = {}
QMODE = os.environ.get("QMODE", "tensor")
def qact(x):
    if QMODE == "token" or (QMODE == "hybrid" and CUR[0]):
        sc = x.abs().amax(dim=-1, keepdim=True) / 127.0
        sc = torch.where(sc == 0, torch.ones_like(sc), sc)
        return torch.clamp(torch.round(x / sc), -127, 127) * sc
    lo = min(0.0, x.min().item()); hi = max(0.0, x.max().item())
    s = (hi - lo) / 255.0 or 1.0
    zp = round(-lo / s); zp = min(255, max(0, zp))
    return (torch.clamp(torch.round(x / s) + zp, 0, 255) - zp) * s
def qw(w):  # w [out, in]; per output column of W^T = per row of w
    s = w.abs().amax(dim=1, keepdim=True) / 63.0
    s[s == 0] = 1
    return torch.clamp(torch.round(w / s), -63, 63) * s
lins = {n_: m for n_, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "layer." in n_}
orig = {n_: m.weight.data.clone() for n_, m in lins.items()}
qweights = {n_: qw(w) for n_, w in orig.items()}
CUR = [False]
def make_hook(name):
    def hook(mod, inp):
        x = inp[0]
        stats.setdefault(name, []).append((x.abs().max().item(), x.abs().mean().item()))
        CUR[0] = "output.dense" in name and "attention" not in name
        if mode.get(name):
            return (qact(x),)
    return hook
for n_, m in lins.items():
    m.register_forward_pre_hook(make_hook(n_))
def embed():
    out = []
    with torch.no_grad():
        for i in range(0, len(corpus), bs):
            b = tok(corpus[i:i+bs], padding=True, truncation=True, max_length=maxlen, return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1))
    return torch.cat(out)
def setq(pred):
    for n_, m in lins.items():
        on = pred(n_)
        mode[n_] = on
        m.weight.data = qweights[n_] if on else orig[n_]
setq(lambda n_: False); ref = embed()
for n_ in sorted(stats, key=lambda k: int(k.split("layer.")[1].split(".")[0]) * 10 + len(k)):
    mx = max(s[0] for s in stats[n_]); mean = np.mean([s[1] for s in stats[n_]])
    print(f"{n_:45s} max|x| {mx:9.2f} mean|x| {mean:.3f} ratio {mx/mean:8.1f}")
def report(label, pred):
    setq(pred); e = embed(); c = (e * ref).sum(-1)
    print(f"{label:40s} cos min {c.min():.4f} mean {c.mean():.4f}", flush=True)
report("all", lambda n_: True)
report("all but FFN out", lambda n_: not ("output.dense" in n_ and "attention" not in n_))
report("all but FFN out+in", lambda n_: not ("output.dense" in n_ and "attention" not in n_) and "intermediate" not in n_)
