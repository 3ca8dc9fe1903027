"""Train-stage benchmarks on the sample dataset (CPU).

1. Time per training step: coltrast's tch trainer (`torch/examples/train_step_bench.rs`) against an equivalent
   PyTorch eager loop (`bench/train_step.py`): same model, batches (8 pairs, each with its hard negatives;
   queries and distinct documents padded to their longest text), sequence lengths, loss, optimiser and
   threads. Alternating rounds in this run; medians over all timed steps and their ratio. Both sides also
   compute the first batch's loss without dropout, which must agree (the same function is timed).
2. The sample's full `train` stage with default settings: wall time and peak memory (/usr/bin/time -v).

Usage: python3 bench/train.py  (env: BIN, TRAIN_EXAMPLE, BENCH_PY, MODEL_DIR; TRAIN_ROUNDS, TRAIN_STEPS)
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile

BIN, EXAMPLE, PY, MODEL = os.environ["BIN"], os.environ["TRAIN_EXAMPLE"], os.environ["BENCH_PY"], os.environ["MODEL_DIR"]
ROUNDS, STEPS, WARMUP = int(os.environ.get("TRAIN_ROUNDS", "3")), int(os.environ.get("TRAIN_STEPS", "5")), 1
SAMPLE = os.path.abspath("data/ai_projects_dataset.json")

tmp = tempfile.mkdtemp(prefix="coltrast-bench-train-")
proj = os.path.join(tmp, "proj")
os.makedirs(proj)
with open(os.path.join(proj, "pipeline.toml"), "w") as f:
    f.write(f'[ingest]\npath = "{SAMPLE}"\n[train]\ndevice = "cpu"\n')


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def manifest(stage):
    out = run([BIN, "show", stage], cwd=proj).stdout
    return out, json.loads(out[out.index("manifest:\n") + len("manifest:\n"):])


run([BIN, "run", "mine"], cwd=proj)
show, _ = manifest("mine")
mine_dir = os.path.join(proj, re.search(r"artifact:\s+(\S+)", show).group(1))  # relative to proj
dump = os.path.join(tmp, "dump")

def last_json(cmd):
    return json.loads(run(cmd).stdout.strip().splitlines()[-1])


rust, torch_, fused = [], [], []
for _ in range(ROUNDS):
    rust.append(last_json([EXAMPLE, MODEL, mine_dir, dump, str(STEPS), str(WARMUP)]))
    torch_.append(last_json([PY, "bench/train_step.py", dump]))
    fused.append(last_json([PY, "bench/train_step.py", dump, "--fused"]))
assert rust[0]["padded_lengths"] == torch_[0]["padded_lengths"], (rust[0]["padded_lengths"], torch_[0]["padded_lengths"])
el_r, el_t = rust[0]["eval_loss_first_batch"], torch_[0]["eval_loss_first_batch"]
assert all(abs(a - b) < 1e-4 for a, b in zip(el_r, el_t)), (el_r, el_t)
r = statistics.median(x for run_ in rust for x in run_["step_ms"])
t = statistics.median(x for run_ in torch_ for x in run_["step_ms"])
lens = rust[0]["padded_lengths"]

print(f"## Training step time (sample pairs, batch 8, CPU, {rust[0]['threads']} threads, {ROUNDS} alternating rounds "
      f"x {STEPS} timed steps after {WARMUP} warm-up)\n")
print("Padded shapes per step (queries len, documents len, documents): "
      + ", ".join(f"({q}, {d}, {n})" for q, d, n in lens[WARMUP:]) + "\n")
f = statistics.median(x for run_ in fused for x in run_["step_ms"])


def phase(runs, key):
    return statistics.median(run_["phases_ms"][key] for run_ in runs)


print("| system | median ms/step | min | max | forward + loss | backward | clip | optimizer |")
print("|---|---|---|---|---|---|---|---|")
for name, runs, med in [(rust[0]["system"], rust, r), (torch_[0]["system"], torch_, t),
                        (fused[0]["system"] + " (reference)", fused, f)]:
    allv = [x for run_ in runs for x in run_["step_ms"]]
    ph = " | ".join(f"{phase(runs, k):.0f}" for k in ["forward_loss", "backward", "clip", "optimizer"])
    print(f"| {name} | {med:.0f} | {min(allv):.0f} | {max(allv):.0f} | {ph} |")
print(f"\nratio coltrast / PyTorch eager (default AdamW): **{r / t:.2f}x** (goal <= 1.0); against PyTorch with its "
      f"fused AdamW: {r / f:.2f}x. Phase columns are medians of per-run means (ms). Loss of the first batch without "
      f"dropout: coltrast {el_r[0]:.6f}, PyTorch {el_t[0]:.6f} (the same function is timed).\n")

# The full train stage with default settings.
timed = subprocess.run(["/usr/bin/time", "-v", BIN, "run", "train"], cwd=proj, capture_output=True, text=True, check=True)
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", timed.stderr).group(1)
rss_mib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", timed.stderr).group(1)) / 1024
_, m = manifest("train")
s = m["stats"]
print("## Full train stage on the sample (default settings, CPU)\n")
print("| stage wall time | process wall time | peak RSS | steps | epochs run | best epoch | train steps/s |")
print("|---|---|---|---|---|---|---|")
print(f"| {m['wall_time_s']:.1f} s | {wall} | {rss_mib:.0f} MiB | {s['steps']} | {s['epochs_run']} | {s['best_epoch']} | "
      f"{s['steps_per_s']:.3f} |")
print(f"\nTrain loss (mean per epoch) {s['train_loss_first_epoch']:.4f} (epoch 1) -> {s['train_loss_last_epoch']:.4f} "
      f"(epoch {s['epochs_run']}); validation loss {s['val_loss_base']:.4f} (untrained) -> {s['val_loss_best']:.4f} (best).\n")
print("Val split, base model -> fine-tuned (pooled cosine):\n")
print("| measure | base | fine-tuned |")
print("|---|---|---|")
for key, label in [
    ("pairwise_acc", f"positive above its own hard negatives ({s['val_comparisons']} comparisons)"),
    ("pooled_negatives_acc", "positive above every hard negative of the val split"),
    ("top1", "positive first among all val hard negatives and the other val positives"),
    ("mrr", "MRR of the positive in that pool"),
    ("margin", "mean cos(positive) - max cos(own hard negatives)"),
]:
    print(f"| {label} | {s[f'val_{key}_base']:.3f} | {s[f'val_{key}_trained']:.3f} |")
shutil.rmtree(tmp, ignore_errors=True)
