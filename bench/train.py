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
import time

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


def tree_rss_mib(pid):
    """Summed VmRSS (MiB) of a process and its descendants."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(l.split()[1]) for l in f if l.startswith("VmRSS:")), 0)
        except OSError:
            pass
    return total / 1024


def stage_memory(project, sets):
    """Runs the train stage alone (upstream cached), polling the RSS of its process tree every 20 ms (an
    independent check of the stage's own figures, which reset the kernel's peak per phase, so /usr/bin/time's
    maximum would show only the last phase); returns (polled peak MiB, stats, rc, stderr)."""
    args = [BIN, "run", "train"]
    for x in sets:
        args += ["--set", x]
    p = subprocess.Popen(args, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while p.poll() is None:
        peak = max(peak, tree_rss_mib(p.pid))
        time.sleep(0.02)
    _, err = p.communicate()
    if p.returncode != 0:
        return peak, None, p.returncode, err
    _, m = manifest_in(project, "train")
    return peak, m["stats"] | {"wall_time_s": m["wall_time_s"]}, 0, err


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
    print("`stage peak` is the stage's own peak RSS (the maximum of its phases' peaks, from the kernel's "
          "high-water mark, reset at each phase); `polled` is the RSS of the process tree sampled every 20 ms "
          "(an independent check; it can miss short spikes). `before steps` = the process when the first step "
          "starts (libtorch and binary, the pairs, the model, its tokenised texts, AdamW's moments); `activations` "
          "= the steps' peak minus that (one forward pass's saved tensors, the gradients of a step and, when "
          "micro-batching, their sum); `estimate` = the largest forward pass by `memory::ActivationModel`; "
          "`MaxSim` = the largest similarity tensor (pairs x query tokens x document tokens floats); "
          "`validation` and `checkpoint` = the RSS growth of one validation pass / one checkpoint write; `end` = "
          "the peak after the last epoch (base_mix, best epoch's weights, model dir export); `passes` = the most "
          "forward passes of one step (2 = no micro-batching).\n")
    print("| data | setting | stage peak | polled | start | pairs | model load | texts | weights | AdamW moments | "
          "before steps | activations | estimate | MaxSim | validation | checkpoint | end | passes | stage wall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, name, rss, st, err in rows:
        if st is None:
            line = next((l for l in err.splitlines() if "needs about" in l or "error" in l.lower()), err.strip()[-200:])
            print(f"| {label} | {name} | refused before the first step: `{line.strip()}` |" + " |" * 16)
            continue
        g = lambda k: st.get(k, float("nan"))
        print(f"| {label} | {name} | **{g('peak_rss_mb'):.0f}** | {rss:.0f} | {g('rss_stage_start_mb'):.0f} | "
              f"{g('rss_pairs_mb'):.0f} | {g('rss_model_load_mb'):.0f} | {g('rss_texts_mb'):.0f} | {g('weights_mb'):.0f} | "
              f"{g('optimizer_state_mb'):.0f} | {g('rss_before_steps_mb'):.0f} | {g('activations_mb'):.0f} | "
              f"{g('activations_estimate_mb'):.0f} | {g('maxsim_mb'):.1f} | {g('validation_growth_mb'):.0f} | "
              f"{g('checkpoint_growth_mb'):.0f} | {g('end_peak_mb'):.0f} | {g('max_passes_per_step')} | "
              f"{g('wall_time_s'):.0f} s |")
    print()


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

    print(f"## Training step time, {os.path.basename(os.path.normpath(MODEL))} (sample pairs, batch 8, CPU, {rust[0]['threads']} threads, {ROUNDS} alternating rounds "
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
    passes = sorted({(p, q) for run_ in rust for p, q in zip(run_["bounded_passes"], run_["bounded_recomputed"])})
    print(f"Bounded step (train.max_activation_mb = {rust[0]['bounded_max_activation_mb']}, the default) on the same "
          f"batches, alternating with the timed step above: median {b:.0f} ms, **{b / r:.2f}x** the unbounded step "
          f"(goal <= 1.1); (groups, of which encoded twice) per step: {passes} (2 groups = the batch fits the budget, "
          f"no micro-batching).\n")


if "stage" in SECTIONS:
    # The full train stage with default settings.
    t0 = time.time()
    polled, s, rc, err = stage_memory(proj, [])
    assert rc == 0, err
    wall = f"{time.time() - t0:.1f} s"
    rss_mib = s["peak_rss_mb"]
    _, m = manifest("train")
    print("## Full train stage on the sample (default settings, CPU)\n")
    print("| stage wall time | process wall time | peak RSS (stage; polled process tree) | steps | epochs run | best epoch | train steps/s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {m['wall_time_s']:.1f} s | {wall} | {rss_mib:.0f} MiB; {polled:.0f} MiB | {s['steps']} | {s['epochs_run']} | {s['best_epoch']} | "
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
            # max_memory_mb is not in the cache key: another seed makes the stage run (and be checked).
            ("batch 64, unbounded, max_memory_mb=8000 (seed 43)",
             ["train.epochs=1", "train.batch_size=64", "train.max_activation_mb=0", "train.max_memory_mb=8000",
              "train.seed=43"]),
        ])
    else:
        print(f"(ai_faq_dev not found at {DEV}: its rows are skipped)\n")
    print_memory(rows)
    print("all-mpnet-base-v2: its train stage's peak RSS on ai_faq_dev (default settings, 3 seeds) is in "
          "bench/results/quality-mpnet.md (`BENCH=mpnet make bench`).\n")

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
    print(f"## Step time, bounded (GradCache) vs unbounded, {os.path.basename(os.path.normpath(MODEL))}, ai_faq_dev "
          "train pairs (batch 8, CPU)\n")
    print("Padded shapes per step (queries len, documents len, documents): "
          + ", ".join(f"({q}, {d}, {n})" for q, d, n in r["padded_lengths"][1:]) + "\n")
    print("| step | median ms/step | groups per step (of which encoded twice) |")
    print("|---|---|---|")
    print(f"| unbounded (one pass for queries, one for documents) | {statistics.median(r['step_ms']):.0f} | 2 |")
    print(f"| bounded, max_activation_mb = {r['bounded_max_activation_mb']} | {statistics.median(r['bounded_step_ms']):.0f} | "
          f"{', '.join(f'{x} ({y})' for x, y in zip(r['bounded_passes'], r['bounded_recomputed']))} |")
    print(f"\nratio bounded / unbounded: **{ratio:.2f}x** (goal <= 1.1).\n")

shutil.rmtree(tmp, ignore_errors=True)
