"""Issue 9: retrieval quality on ../shared/data/ai_faq_dev (BEIR layout; tuned on train, reported on test).

Each experiment is a set of `--set` overrides on top of the defaults (the only default changed everywhere is
`ingest.path`). Experiments that train run with 3 training seeds (`train.seed` = 1, 2, 3): the table gives the
mean and the spread (max - min) over seeds. All experiments share one artifacts dir, so stages whose inputs did
not change are cached across experiments (a sweep of eval-time weights trains nothing new).

Writes one row per experiment and system: document-level nDCG@10, R@1, MRR@10 (mean ± spread), and the gain of
the mean nDCG@10 over `base-whole` (the untuned base model over whole passages, measured in the same run).
It also times the default pipeline on the sample dataset cold (fresh artifacts dir) and checks the seed's four
example questions.

For the MPNet experiment (`model.base=all-mpnet-base-v2`, installed by `make setup MODELS=...`), each seed's
fine-tuned model dir is then loaded by `SentenceTransformer(path)` and exported by coltrast; the cosines between
sentence-transformers' vectors, coltrast's ort vectors and Python onnxruntime's on that model.onnx are reported
(needs SERVE_BENCH and BENCH_PY, which `make bench` sets).

Usage: python3 bench/quality.py [EXPERIMENT ...]   (env: BIN, AI_FAQ_DEV, QUALITY_SEEDS="1,2,3", MPNET_SETS)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ["BIN"]
DEV = os.environ.get("AI_FAQ_DEV", os.path.abspath("../shared/data/ai_faq_dev"))
SEEDS = [int(s) for s in os.environ.get("QUALITY_SEEDS", "1,2,3").split(",")]
ARTS = os.environ.get("QUALITY_ARTIFACTS", os.path.join(tempfile.gettempdir(), "coltrast-quality-artifacts"))
SYSTEMS = ["base-whole", "base", "base+hybrid", "coltrast", "coltrast+rerank", "coltrast+hybrid"]

# name -> (description, overrides, seeds, systems reported). Experiments that change a train-time setting
# train 3 seeds each (12 minutes a run on 2 cores); eval-time settings (the fusion weights) reuse the defaults'
# trained models. Chunking experiments report only the untrained systems (base-whole, base, base+hybrid),
# which do not depend on training: they run with train.epochs=1 and one seed to keep the bench under an hour,
# and their fine-tuned rows are not shown.
ALL = None
MPNET_SETS = [x for x in os.environ.get("MPNET_SETS", "").split(",") if x]
UNTRAINED = ["base-whole", "base", "base+hybrid"]
EXPERIMENTS = {
    "defaults": ("defaults", [], SEEDS, ALL),
    "lexical-0": ("index.lexical_weight=0 (dense only)", ["index.lexical_weight=0"], SEEDS, ["base+hybrid", "coltrast+hybrid"]),
    "lexical-0.2": ("index.lexical_weight=0.2", ["index.lexical_weight=0.2"], SEEDS, ["base+hybrid", "coltrast+hybrid"]),
    "lexical-0.3": ("index.lexical_weight=0.3", ["index.lexical_weight=0.3"], SEEDS, ["base+hybrid", "coltrast+hybrid"]),
    "rerank-1": ("index.rerank_weight=1 (pure MaxSim rerank, the seed's)", ["index.rerank_weight=1"], SEEDS, ["coltrast+rerank"]),
    "rerank-0.1": ("index.rerank_weight=0.1", ["index.rerank_weight=0.1"], SEEDS, ["coltrast+rerank"]),
    "rerank-0.5": ("index.rerank_weight=0.5", ["index.rerank_weight=0.5"], SEEDS, ["coltrast+rerank"]),
    # Bigger batches fit in the same memory since GradCache (train.max_activation_mb): more in-batch negatives.
    "batch-32": ("train.batch_size=32", ["train.batch_size=32"], SEEDS, ALL),
    "batch-64": ("train.batch_size=64", ["train.batch_size=64"], SEEDS, ALL),
    # The seed's "for better performance" base (issue 10): about 9x MiniLM's compute per token.
    # MPNET_SETS adds overrides (comma-separated, e.g. "train.epochs=2" where 10 epochs of MPNet take too long).
    "mpnet": (", ".join(["model.base=all-mpnet-base-v2", *MPNET_SETS]), ["model.base=all-mpnet-base-v2", *MPNET_SETS],
              SEEDS, ALL),
    "semantic-0.7": ("chunk.strategy=semantic, threshold 0.7 (the seed's chunking)",
                     ["chunk.strategy=semantic", "train.epochs=1"], SEEDS[:1], UNTRAINED),
    "none": ("chunk.strategy=none (whole passages, truncated)", ["chunk.strategy=none", "train.epochs=1"], SEEDS[:1],
             UNTRAINED),
    "min-tokens-0": ("chunk.min_tokens=0 (every heading cuts)", ["chunk.min_tokens=0", "train.epochs=1"], SEEDS[:1],
                     UNTRAINED),
    "max-tokens-128": ("chunk.max_tokens=128", ["chunk.max_tokens=128", "train.epochs=1"], SEEDS[:1], UNTRAINED),
}


def set_args(overrides, seed):
    """The `--set` arguments of one experiment and seed."""
    args = ["--set", f"ingest.path={DEV}", "--set", f"artifacts_dir={ARTS}", "--set", f"train.seed={seed}"]
    for o in overrides:
        args += ["--set", o]
    return args


def run(overrides, seed, cwd):
    args = set_args(overrides, seed)
    t = time.time()
    p = subprocess.run([BIN, "run", *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"[quality] run failed: {overrides} seed {seed}")
    ran = [l.split()[0] for l in p.stderr.splitlines() if len(l.split()) > 1 and l.split()[1] == "ran"]
    show = subprocess.run([BIN, "show", "eval", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    stats = json.loads(show[show.index("manifest:\n") + len("manifest:\n"):])["stats"]
    return stats, ran, time.time() - t


def train_stat(overrides, seed, cwd, key):
    args = set_args(overrides, seed)
    show = subprocess.run([BIN, "show", "train", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    return json.loads(show[show.index("manifest:\n") + len("manifest:\n"):])["stats"].get(key, "–")


def artifact(stage, overrides, seed, cwd):
    args = set_args(overrides, seed)
    show = subprocess.run([BIN, "show", stage, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    path = next(l.split(None, 1)[1].strip() for l in show.splitlines() if l.startswith("artifact:"))
    return path if os.path.isabs(path) else os.path.join(cwd, path)


def check_tuned_dirs(name, seeds, cwd):
    """SentenceTransformer(path) on each seed's fine-tuned model dir against coltrast's export of it (ort) and
    Python onnxruntime on that model.onnx, over the first 64 ai_faq_dev passages."""
    ex, py = os.environ.get("SERVE_BENCH"), os.environ.get("BENCH_PY")
    if not ex or not py:
        print(f"- {name}: SERVE_BENCH/BENCH_PY not set; the fine-tuned model dirs were not loaded by "
              "sentence-transformers")
        return
    _, overrides, _, _ = EXPERIMENTS[name]
    corpus = os.path.join(DEV, "corpus.jsonl")
    for seed in seeds:
        model_dir = os.path.join(artifact("train", overrides, seed, cwd), "model")
        tmp = tempfile.mkdtemp(prefix="coltrast-quality-st-")
        vec, onnx_dir = os.path.join(tmp, "ours.f32"), os.path.join(tmp, "onnx")
        subprocess.run([ex, "embed", corpus, model_dir, vec, "64", "1", "none", onnx_dir], check=True,
                       capture_output=True)
        out = subprocess.run([py, "bench/ort_st.py", model_dir, corpus, "64", vec, "1", onnx_dir], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        c, po = r["cosines"][vec], r["python_onnxruntime"]
        print(f"- {name} seed {seed}: SentenceTransformer(fine-tuned dir) vs coltrast's ort export: min cos "
              f"{c['min_cos']:.7f}; Python onnxruntime on that model.onnx vs sentence-transformers: min cos "
              f"{po['vs_sentence_transformers']['min_cos']:.7f}, vs coltrast: {po['vs_coltrast']['min_cos']:.7f} "
              f"({r['passages']} passages, max_seq_length {r['max_seq_length']})", flush=True)


def fmt(vals):
    if not vals:
        return "–"
    m = statistics.mean(vals)
    return f"{m:.3f} ± {max(vals) - min(vals):.3f}" if len(vals) > 1 else f"{m:.3f}"


SAMPLE_QUESTIONS = [
    ("What AI model is used for medical diagnosis?", "medical-image-diagnosis"),
    ("What is the data size for sentiment analysis?", "customer-sentiment-nlp"),
    ("What are the lessons learned from the trading bot?", "rl-trading-bot"),
    ("Which project uses reinforcement learning?", "rl-trading-bot"),
]


def sample_cold():
    """The default pipeline on the sample, cold (fresh artifacts dir, so no embedding cache), and the seed's
    four example questions."""
    proj = tempfile.mkdtemp(prefix="coltrast-quality-sample-")
    with open(os.path.join(proj, "pipeline.toml"), "w") as f:
        f.write(f'[ingest]\npath = "{os.path.abspath("data/ai_projects_dataset.json")}"\n')
    t = time.time()
    p = subprocess.run([BIN, "run"], cwd=proj, check=True, capture_output=True, text=True)
    wall = time.time() - t
    last = p.stdout.strip().splitlines()[-1]
    right = 0
    for q, want in SAMPLE_QUESTIONS:
        got = json.loads(subprocess.run([BIN, "ask", q, "--json"], cwd=proj, check=True, capture_output=True,
                                        text=True).stdout)["top_project"]
        right += got == want
        print(f"- sample: {q!r} -> {got} ({'right' if got == want else 'WRONG, expected ' + want})")
    print(f"- sample: default pipeline cold {wall:.1f} s (goal < 60 s); {right}/4 example questions right; "
          f"last line: `{last}`")


def main():
    if not os.path.isdir(DEV):
        print(f"[bench] skipping quality: ai_faq_dev not found at {DEV} (set AI_FAQ_DEV=...)")
        return
    names = sys.argv[1:] or list(EXPERIMENTS)
    cwd = tempfile.mkdtemp(prefix="coltrast-quality-")
    print("## Retrieval quality on ai_faq_dev test (64 questions), document level\n")
    print(f"Training seeds {SEEDS}; mean ± spread (max − min). Gain: mean nDCG@10 minus base-whole's, same run.")
    print("base-whole is the untuned base model over whole passages (the baseline a user already has).\n")
    print("| experiment | system | nDCG@10 | R@1 | MRR@10 | gain vs base-whole | val best lexical / rerank weight |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        desc, overrides, seeds, systems = EXPERIMENTS[name]
        per_seed = [run(overrides, seed, cwd) for seed in seeds]
        base = statistics.mean(s["base-whole/document/ndcg@10"] for s, _, _ in per_seed)
        val_w = "; ".join(
            f"{s.get('val_best_lexical_weight', '–')} / {s.get('val_best_rerank_weight', '–')}" for s, _, _ in per_seed)
        for sysname in systems or SYSTEMS:
            get = lambda m: [s[f"{sysname}/document/{m}"] for s, _, _ in per_seed if f"{sysname}/document/{m}" in s]
            nd = get("ndcg@10")
            if not nd:
                continue
            gain = "" if sysname == "base-whole" else f"{statistics.mean(nd) - base:+.3f}"
            print(f"| {desc} | {sysname} | {fmt(nd)} | {fmt(get('recall@1'))} | {fmt(get('mrr@10'))} | {gain} | "
                  f"{val_w if sysname == 'coltrast' else ''} |", flush=True)
        if systems is ALL:
            best = [(s["best_system"], s["best_gain_ndcg@10"]) for s, _, _ in per_seed]
            mixes = [str(train_stat(overrides, seed, cwd, "base_mix")) for seed in seeds]
            walls = [w for _, _, w in per_seed]
            peaks = [str(train_stat(overrides, seed, cwd, "peak_rss_mb")) for seed in seeds]
            epochs = [f"{train_stat(overrides, seed, cwd, 'best_epoch')}/{train_stat(overrides, seed, cwd, 'epochs_run')}"
                      for seed in seeds]
            print(f"| {desc} | best system per seed | {', '.join(f'{b} {g:+.3f}' for b, g in best)} | | | | "
                  f"base_mix chosen {', '.join(mixes)}; wall {', '.join(f'{w:.0f}s' for w in walls)}; train peak "
                  f"RSS {', '.join(peaks)} MiB; best/run epochs {', '.join(epochs)} |", flush=True)
    for name in names:
        if name == "mpnet":
            print()
            check_tuned_dirs(name, EXPERIMENTS[name][2], cwd)


if __name__ == "__main__":
    main()
    print()
    sample_cold()
