"""Train-stage benchmarks on the sample dataset (CPU).

1. Time per training step: coltrast's tch trainer (`torch/examples/train_step_bench.rs`) against an equivalent
   PyTorch eager loop (`bench/train_step.py`): same model, batches (8 pairs, each with its hard negatives;
   queries and distinct documents padded to their longest text), sequence lengths, loss, optimiser and
   threads. Alternating rounds in this run; medians over all timed steps and their ratio. Both sides also
   compute the first batch's loss without dropout, which must agree (the same function is timed).
2. The sample's full `train` stage with default settings: wall time and peak memory (/usr/bin/time -v).
3. Training memory: the train stage's peak RSS and where it goes (the manifest's memory stats), on the sample
   and on ../shared/data/ai_faq_dev (train split), with activations unbounded (`train.max_activation_mb=0`,
   the behaviour before GradCache) and bounded (the default), at batch 8 and 64. These runs use
   `train.epochs=1`: every batch shape of the data occurs in the first epoch, and the checkpoint, validation
   and base_mix phases run as in a longer run.
4. Step time of the bounded step (GradCache where a batch exceeds `train.max_activation_mb`) against the
   unbounded step on the same batches in the same process, on the sample and on ai_faq_dev.

Usage: python3 bench/train.py  (env: BIN, TRAIN_EXAMPLE, BENCH_PY, MODEL_DIR, AI_FAQ_DEV; TRAIN_ROUNDS,
TRAIN_STEPS, TRAIN_SECTIONS=speed,stage,memory)
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
SECTIONS = os.environ.get("TRAIN_SECTIONS", "speed,stage,memory").split(",")
DEV = os.environ.get("AI_FAQ_DEV", os.path.abspath("../shared/data/ai_faq_dev"))
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


if "speed" in SECTIONS:
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
    b = statistics.median(x for run_ in rust for x in run_["bounded_step_ms"])
    passes = sorted({p for run_ in rust for p in run_["bounded_passes"]})
    print(f"Bounded step (train.max_activation_mb = {rust[0]['bounded_max_activation_mb']}, the default) on the same "
          f"batches, alternating with the timed step above: median {b:.0f} ms, **{b / r:.2f}x** the unbounded step "
          f"(goal <= 1.1); forward passes per step: {passes} (2 = the batch fits the budget, no micro-batching).\n")


if "stage" in SECTIONS:
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


def stage_memory(project, sets):
    """Runs the train stage alone (upstream cached) under /usr/bin/time; returns (process peak MiB, stats, rc,
    stderr)."""
    args = ["/usr/bin/time", "-v", BIN, "run", "train"]
    for x in sets:
        args += ["--set", x]
    p = subprocess.run(args, cwd=project, capture_output=True, text=True)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    rss = int(rss.group(1)) / 1024 if rss else float("nan")
    if p.returncode != 0:
        return rss, None, p.returncode, p.stderr
    _, m = manifest_in(project, "train")
    return rss, m["stats"] | {"wall_time_s": m["wall_time_s"]}, 0, p.stderr


def manifest_in(project, stage):
    out = run([BIN, "show", stage], cwd=project).stdout
    return out, json.loads(out[out.index("manifest:\n") + len("manifest:\n"):])


def memory_rows(label, project, configs):
    rows = []
    for name, sets in configs:
        rss, st, rc, err = stage_memory(project, sets)
        rows.append((label, name, rss, st, err if rc else None))
    return rows


def print_memory(rows):
    print("## Training memory: peak RSS of the train stage and where it goes (CPU, MiB)\n")
    print("`activations` is the steps' peak RSS minus the RSS before the first step (measured); `estimate` is "
          "the largest forward pass by `memory::ActivationModel`; `MaxSim` is the largest similarity tensor "
          "(pairs x query tokens x document tokens floats); `checkpoint` is the RSS growth while a checkpoint is "
          "written; `passes` is the most forward passes of one step (2 = no micro-batching).\n")
    print("| data | setting | process peak (time -v) | stage peak | start (libtorch, binary) | pairs | model load | "
          "texts | weights | AdamW moments | before steps | activations | estimate | MaxSim | checkpoint | passes | "
          "stage wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, name, rss, st, err in rows:
        if st is None:
            line = next((l for l in err.splitlines() if "needs about" in l or "error" in l.lower()), err.strip()[-200:])
            print(f"| {label} | {name} | refused before the first step: `{line.strip()}` |" + " |" * 14)
            continue
        g = lambda k: st.get(k, float("nan"))
        print(f"| {label} | {name} | {rss:.0f} | {g('peak_rss_mb'):.0f} | {g('rss_stage_start_mb'):.0f} | "
              f"{g('rss_pairs_mb'):.0f} | {g('rss_model_load_mb'):.0f} | {g('rss_texts_mb'):.0f} | {g('weights_mb'):.0f} | "
              f"{g('optimizer_state_mb'):.0f} | {g('rss_before_steps_mb'):.0f} | {g('activations_mb'):.0f} | "
              f"{g('activations_estimate_mb'):.0f} | {g('maxsim_mb'):.1f} | "
              f"{g('checkpoint_peak_mb') - g('rss_before_steps_mb'):.0f} | {g('max_passes_per_step')} | "
              f"{g('wall_time_s'):.0f} s |")
    print()


if "memory" in SECTIONS:
    rows = memory_rows("sample", proj, [
        ("unbounded (max_activation_mb=0)", ["train.epochs=1", "train.max_activation_mb=0"]),
        ("default (max_activation_mb=512)", ["train.epochs=1"]),
        ("batch 64, default", ["train.epochs=1", "train.batch_size=64"]),
    ])
    if os.path.isdir(DEV):
        dev = os.path.join(tmp, "dev")
        os.makedirs(dev)
        with open(os.path.join(dev, "pipeline.toml"), "w") as f:
            f.write(f'[ingest]\npath = "{DEV}"\n[train]\ndevice = "cpu"\n')
        run([BIN, "run", "mine"], cwd=dev)
        rows += memory_rows("ai_faq_dev", dev, [
            ("unbounded (max_activation_mb=0)", ["train.epochs=1", "train.max_activation_mb=0"]),
            ("default (max_activation_mb=512)", ["train.epochs=1"]),
            ("batch 64, default", ["train.epochs=1", "train.batch_size=64"]),
            ("batch 64, unbounded", ["train.epochs=1", "train.batch_size=64", "train.max_activation_mb=0"]),
        ])
    else:
        print(f"(ai_faq_dev not found at {DEV}: its rows are skipped)\n")
    print_memory(rows)
    print("all-mpnet-base-v2: not measured yet (the base model is MiniLM-only until MPNet is supported).\n")

if "speed" in SECTIONS and os.path.isdir(DEV):
    # Step time bounded vs unbounded on ai_faq_dev's long documents (one round: steps take seconds).
    _, mm = manifest_in(os.path.join(tmp, "dev"), "mine") if os.path.isdir(os.path.join(tmp, "dev")) else (None, None)
    dev = os.path.join(tmp, "dev")
    if not os.path.isdir(dev):
        os.makedirs(dev)
        with open(os.path.join(dev, "pipeline.toml"), "w") as f:
            f.write(f'[ingest]\npath = "{DEV}"\n[train]\ndevice = "cpu"\n')
        run([BIN, "run", "mine"], cwd=dev)
    show, _ = manifest_in(dev, "mine")
    dev_mine = os.path.join(dev, re.search(r"artifact:\s+(\S+)", show).group(1))
    r = last_json([EXAMPLE, MODEL, dev_mine, os.path.join(tmp, "dump-dev"), os.environ.get("TRAIN_DEV_STEPS", "4"), "1"])
    ratio = statistics.median(r["bounded_step_ms"]) / statistics.median(r["step_ms"])
    print("## Step time, bounded (GradCache) vs unbounded, ai_faq_dev train pairs (batch 8, CPU)\n")
    print("Padded shapes per step (queries len, documents len, documents): "
          + ", ".join(f"({q}, {d}, {n})" for q, d, n in r["padded_lengths"][1:]) + "\n")
    print("| step | median ms/step | forward passes per step |")
    print("|---|---|---|")
    print(f"| unbounded (one pass for queries, one for documents) | {statistics.median(r['step_ms']):.0f} | 2 |")
    print(f"| bounded, max_activation_mb = {r['bounded_max_activation_mb']} | {statistics.median(r['bounded_step_ms']):.0f} | "
          f"{', '.join(str(x) for x in r['bounded_passes'])} |")
    print(f"\nratio bounded / unbounded: **{ratio:.2f}x** (goal <= 1.1).\n")

shutil.rmtree(tmp, ignore_errors=True)
