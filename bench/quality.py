"""Retrieval quality on the two FAQ dev sets, with paired confidence intervals.

What it measures
----------------
Every experiment is a set of `--set` overrides on top of the pipeline defaults, run on each dev set
(`ai_faq_dev_v3`: 19 projects, 194 test questions; `ai_faq_dev`: 8 projects, 64 test questions; both BEIR folders,
tuned on train, scored on test) with each training seed (`train.seed`, QUALITY_SEEDS, default 1,2,3). From each
run the script reads the eval stage's `eval_queries.parquet` (the document-level rank of each test question's one
relevant passage, per system) and derives, per question: nDCG@10 = 1/log2(rank+1), R@1 = [rank == 1] and
MRR@10 = 1/rank (0 when the passage is not in the top 10). The means over questions are checked against the
stats in the eval manifest.

For each experiment, dataset and system it prints:
- nDCG@10, R@1 and MRR@10: mean over seeds ± spread (max − min over seeds);
- the paired difference in nDCG@10 against `base-whole` (the untuned base model over whole passages: what a user
  has without coltrast) and against `base` (the untuned base model over the same chunks): per test question the
  metric is averaged over seeds for each system, the two are subtracted, and the mean difference gets a 95%
  percentile bootstrap interval over questions (10,000 resamples, fixed RNG seed, so reruns print the same);
- the same on the union of both sets' test questions (the per-question differences concatenated);
- per project (the `project` of each question in queries.jsonl): the mean nDCG@10 difference of coltrast − base
  and served − base.

`served` is not a system of its own: per run it is the system that the eval manifest's `served_system` stat
names (the system the pipeline serves); it is left out where the stat is absent.

Decisions. A lever (an experiment with non-default overrides) is compared with the defaults on the same system,
paired per question over the same seeds. A default changes only when the lever's gain holds on both dev sets (mean
difference > 0 on each) and its 95% interval on their union excludes zero: the script prints "passes" or "does not
pass (...)" for every lever. The defaults get the same verdict for coltrast and served against base-whole and base.

Two more experiments change the data, not the settings (both from ai_faq_dev_v3; the test questions of the
curve never change):
- `curve`: learning curve. qrels/train.tsv keeps a nested, seeded (seed 0, independent of the training seed)
  random subsample of 25, 50 and 100 train questions, or all of them; coltrast − base and served − base with
  intervals per size, overall and per project.
- `lpo`: leave projects out. The sorted project names are shuffled (seed 0) and cut in two halves; split A
  trains on half 1's train questions and tests on half 2's test questions, split B the reverse. coltrast − base
  and served − base per split and pooled, overall and per project.

Experiments (`--list`): with no names it runs defaults, curve, lpo and the eval-time levers (lexical-*, rerank-*).
The train-time levers (batch-32, batch-64, mpnet) and the chunking levers (semantic-0.7, none, min-tokens-0,
max-tokens-128) retrain, so they run only when named.

It also times the default pipeline on the sample dataset cold and checks the seed's four example questions, and
for the MPNet experiment loads each seed's fine-tuned model dir with sentence-transformers (needs SERVE_BENCH and
BENCH_PY, which `make bench` sets).

Cost: on 2 cores a default run on ai_faq_dev took 400 to 510 s (earlier bench); ai_faq_dev_v3 has three times
the train questions and 2.5 times the passages, so expect more. Eval-time levers
(`index.lexical_weight`, `index.rerank_weight`) reuse the trained models of the defaults, since every run shares
one artifacts dir (QUALITY_ARTIFACTS) and unchanged stages are cached. The default list takes hours.

Usage:
  python bench/quality.py [EXPERIMENT ...]   (run under the bench venv: numpy and pyarrow; see bench/run.sh)
  python bench/quality.py --selftest         (checks the analysis functions on synthetic data; no pipeline)
  python bench/quality.py --list             (the experiments)
Env: BIN (the coltrast binary), AI_FAQ_DEV_V3, AI_FAQ_DEV (dataset folders), QUALITY_SEEDS="1,2,3",
QUALITY_SETS (a comma-separated subset of ai_faq_dev_v3,ai_faq_dev), QUALITY_ARTIFACTS (shared artifacts dir),
QUALITY_DATA (where the derived curve/lpo datasets are written),
MPNET_SETS (extra overrides for `mpnet`), SERVE_BENCH and BENCH_PY (the MPNet model-dir check).
"""
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

try:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as e:  # system python3 has neither
    raise SystemExit(f"[quality] {e}: run under the bench venv (`\"$(bash bench/venv.sh)\" bench/quality.py`), "
                     "which has numpy and pyarrow")

# ------------------------------------------------------------------------------------------------------------
# Configuration

SEEDS = [int(s) for s in os.environ.get("QUALITY_SEEDS", "1,2,3").split(",") if s.strip()]
ARTS = os.environ.get("QUALITY_ARTIFACTS", os.path.join(tempfile.gettempdir(), "coltrast-quality-artifacts"))
DERIVED = os.environ.get("QUALITY_DATA", os.path.join(tempfile.gettempdir(), "coltrast-quality-data"))
# The dev sets, in report order: name -> folder. The first one is also the source of `curve` and `lpo`.
DATASETS = {
    "ai_faq_dev_v3": os.environ.get("AI_FAQ_DEV_V3", os.path.abspath("../shared/data/ai_faq_dev_v3")),
    "ai_faq_dev": os.environ.get("AI_FAQ_DEV", os.path.abspath("../shared/data/ai_faq_dev")),
}
# QUALITY_SETS="ai_faq_dev" restricts the run to some sets (a lever then cannot pass: the rule needs both).
_only = [x.strip() for x in os.environ.get("QUALITY_SETS", "").split(",") if x.strip()]
if _only:
    DATASETS_RUN = {k: v for k, v in DATASETS.items() if k in _only}
else:
    DATASETS_RUN = dict(DATASETS)
CURVE_SOURCE = "ai_faq_dev_v3"
CURVE_SIZES = [25, 50, 100, None]  # None: all train questions
DATA_SEED = 0  # the subsample of `curve` and the project split of `lpo`; never the training seed
RESAMPLES = 10_000
BOOT_SEED = 0

SYSTEMS = ["base-whole", "base", "base+hybrid", "coltrast", "coltrast+rerank", "coltrast+hybrid"]
SERVED = "served"
UNTRAINED = ["base-whole", "base", "base+hybrid"]
METRICS = ["ndcg@10", "recall@1", "mrr@10"]
MPNET_SETS = [x for x in os.environ.get("MPNET_SETS", "").split(",") if x]
BIN = None  # the coltrast binary ($BIN); read in main, not needed by --selftest


@dataclass(frozen=True)
class Experiment:
    desc: str
    overrides: tuple = ()
    seeds: tuple = tuple(SEEDS)
    systems: tuple = None  # systems shown; None: all (and `served`)
    decide: tuple = ()  # for a lever: the systems whose difference against the defaults decides, first present


ALL_SERVED = ("served", "coltrast")
# Eval-time levers (fusion weights) reuse the defaults' trained models, so they cost one eval per run. Train-time
# levers retrain every seed on both sets. The chunking levers change the chunks and hence everything downstream;
# they report only the untrained systems, with train.epochs=1 and one seed to keep them cheap.
EXPERIMENTS = {
    "defaults": Experiment("defaults"),
    "lexical-0": Experiment("index.lexical_weight=0 (dense only)", ("index.lexical_weight=0",),
                            systems=("base+hybrid", "coltrast+hybrid"), decide=("coltrast+hybrid",)),
    "lexical-0.2": Experiment("index.lexical_weight=0.2", ("index.lexical_weight=0.2",),
                              systems=("base+hybrid", "coltrast+hybrid"), decide=("coltrast+hybrid",)),
    "lexical-0.3": Experiment("index.lexical_weight=0.3", ("index.lexical_weight=0.3",),
                              systems=("base+hybrid", "coltrast+hybrid"), decide=("coltrast+hybrid",)),
    "rerank-1": Experiment("index.rerank_weight=1 (pure MaxSim rerank, the seed's)", ("index.rerank_weight=1",),
                           systems=("coltrast+rerank",), decide=("coltrast+rerank",)),
    "rerank-0.1": Experiment("index.rerank_weight=0.1", ("index.rerank_weight=0.1",), systems=("coltrast+rerank",),
                             decide=("coltrast+rerank",)),
    "rerank-0.5": Experiment("index.rerank_weight=0.5", ("index.rerank_weight=0.5",), systems=("coltrast+rerank",),
                             decide=("coltrast+rerank",)),
    # Issue 22, section 2: synthetic queries over the whole corpus (the generate stage), each source alone and
    # both together; decided on what is served and on the fine-tuned model itself.
    "gen-headings": Experiment('generate.sources=["headings"]', ('generate.sources=["headings"]',),
                               decide=ALL_SERVED),
    "gen-cloze": Experiment('generate.sources=["cloze"]', ('generate.sources=["cloze"]',), decide=ALL_SERVED),
    "gen-both": Experiment('generate.sources=["headings","cloze"]', ('generate.sources=["headings","cloze"]',),
                           decide=ALL_SERVED),
    # Questions written per chunk by SmolLM2-135M-Instruct (GGUF, in-process; MODELS=SmolLM2-135M-Instruct make
    # setup), alone and with the other two sources.
    "gen-llm": Experiment('generate.sources=["llm"]', ('generate.sources=["llm"]',), decide=ALL_SERVED),
    "gen-all": Experiment('generate.sources=["headings","cloze","llm"]',
                          ('generate.sources=["headings","cloze","llm"]',), decide=ALL_SERVED),
    # Issue 22, section 3: all-mpnet-base-v2 as teacher (listwise KL distillation, train.distill_weight 1),
    # alone and with the synthetic queries.
    "teacher": Experiment("train.teacher=all-mpnet-base-v2", ("train.teacher=all-mpnet-base-v2",),
                          decide=ALL_SERVED),
    "teacher-gen": Experiment('train.teacher=all-mpnet-base-v2, generate.sources=["headings","cloze"]',
                              ("train.teacher=all-mpnet-base-v2", 'generate.sources=["headings","cloze"]'),
                              decide=ALL_SERVED),
    # A fixed share of base weights instead of "auto": on ai_faq_dev_v3 the two seeds where "auto" chose 0.0 (no
    # averaging) were no better than the base model on test, the one that chose 0.5 was +0.03.
    "mix-0.5": Experiment("train.base_mix=0.5", ("train.base_mix=0.5",), decide=ALL_SERVED),
    # No weight averaging: at 50 labelled questions "auto" chose 0.5-0.75 from 13 validation questions.
    # Longer training: with the defaults every leave-projects-out run and two of three 50-question runs chose their
    # last epoch (10 of 10) as the best; early stopping (train.patience) still ends a run that stops improving.
    "epochs-20": Experiment("train.epochs=20", ("train.epochs=20",), decide=ALL_SERVED),
    "mix-0": Experiment("train.base_mix=0 (no averaging with the base weights)", ("train.base_mix=0",),
                        decide=ALL_SERVED),
    # Bigger batches fit in the same memory since GradCache (train.max_activation_mb): more in-batch negatives.
    "batch-32": Experiment("train.batch_size=32", ("train.batch_size=32",), decide=ALL_SERVED),
    "batch-64": Experiment("train.batch_size=64", ("train.batch_size=64",), decide=ALL_SERVED),
    # The seed's "for better performance" base (issue 10): about 9x MiniLM's compute per token.
    # MPNET_SETS adds overrides (comma-separated, e.g. "train.epochs=2" where 10 epochs of MPNet take too long).
    "mpnet": Experiment(", ".join(["model.base=all-mpnet-base-v2", *MPNET_SETS]),
                        ("model.base=all-mpnet-base-v2", *MPNET_SETS), decide=ALL_SERVED),
    "semantic-0.7": Experiment("chunk.strategy=semantic, threshold 0.7 (the seed's chunking)",
                               ("chunk.strategy=semantic", "train.epochs=1"), tuple(SEEDS[:1]), tuple(UNTRAINED),
                               decide=("base",)),
    "none": Experiment("chunk.strategy=none (whole passages, truncated)", ("chunk.strategy=none", "train.epochs=1"),
                       tuple(SEEDS[:1]), tuple(UNTRAINED), decide=("base",)),
    "min-tokens-0": Experiment("chunk.min_tokens=0 (every heading cuts)", ("chunk.min_tokens=0", "train.epochs=1"),
                               tuple(SEEDS[:1]), tuple(UNTRAINED), decide=("base",)),
    "max-tokens-128": Experiment("chunk.max_tokens=128", ("chunk.max_tokens=128", "train.epochs=1"),
                                 tuple(SEEDS[:1]), tuple(UNTRAINED), decide=("base",)),
}
# Experiments over derived datasets (handled by their own functions below).
DATA_EXPERIMENTS = {
    "curve": "learning curve: 25, 50, 100 and all train questions of ai_faq_dev_v3 (nested seeded subsample)",
    "lpo": "leave projects out: train on one half of ai_faq_dev_v3's projects, test on the other",
    "curve-lever": "a lever (QUALITY_CURVE_LEVER, an experiment name) against the defaults on the learning curve's "
                   "subsamples (QUALITY_CURVE_SIZES, e.g. 25,50)",
}
DEFAULT_LIST = ["defaults", "curve", "lpo", "lexical-0", "lexical-0.2", "lexical-0.3", "rerank-1", "rerank-0.1",
                "rerank-0.5"]


# ------------------------------------------------------------------------------------------------------------
# Analysis: small pure functions (exercised by --selftest)

def query_id(qa_id):
    """The BEIR query id of a qa_id (`qid` or `qid#k` for a query's k-th relevant passage)."""
    return qa_id.split("#", 1)[0]


def metrics_from_rank(rank):
    """Per-question metrics with one relevant passage, from its 1-based rank (None: not retrieved)."""
    if rank is None or rank > 10:
        return {"ndcg@10": 0.0, "recall@1": 0.0, "mrr@10": 0.0}
    return {"ndcg@10": 1.0 / math.log2(rank + 1), "recall@1": float(rank == 1), "mrr@10": 1.0 / rank}


def per_query(ranks, metric):
    """{qa_id: rank} -> {qa_id: metric value}."""
    return {qa: metrics_from_rank(r)[metric] for qa, r in ranks.items()}


def mean_metric(ranks, metric):
    """The mean of a metric over the questions of one run (0 when there are none)."""
    vals = per_query(ranks, metric)
    return sum(vals.values()) / len(vals) if vals else 0.0


def seed_mean(per_seed):
    """[{qa_id: value}, ...] over seeds -> {qa_id: mean over seeds}; every seed must score the same questions."""
    keys = set(per_seed[0])
    for d in per_seed[1:]:
        if set(d) != keys:
            raise ValueError(f"seeds scored different questions ({len(keys ^ set(d))} differ)")
    return {k: sum(d[k] for d in per_seed) / len(per_seed) for k in keys}


def paired_diff(a, b):
    """Per-question a − b over the same questions, in sorted qa_id order (a numpy vector)."""
    if set(a) != set(b):
        raise ValueError(f"paired difference over different questions ({len(set(a) ^ set(b))} differ)")
    return np.array([a[k] - b[k] for k in sorted(a)], dtype=float)


def bootstrap_ci(diffs, resamples=RESAMPLES, seed=BOOT_SEED, level=0.95):
    """(mean, low, high): the mean of `diffs` and its percentile bootstrap interval over questions. The RNG is
    seeded here, so the same vector always gets the same interval."""
    d = np.asarray(diffs, dtype=float)
    if d.size == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // d.size)  # resample in blocks to bound memory
    for start in range(0, resamples, step):
        n = min(step, resamples - start)
        means[start:start + n] = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return (float(d.mean()), float(lo), float(hi))


def excludes_zero(ci):
    """Whether a (mean, low, high) interval leaves out zero."""
    _, lo, hi = ci
    return lo > 0 or hi < 0


def union(per_set):
    """The per-question difference vectors of several sets, concatenated (their questions are distinct)."""
    vecs = [np.asarray(v, dtype=float) for v in per_set.values()]
    return np.concatenate(vecs) if vecs else np.array([], dtype=float)


@dataclass
class Verdict:
    means: dict  # set name -> mean difference
    union_ci: tuple  # (mean, low, high) on the union
    passes: bool
    why: str


def decide(per_set, required):
    """The rule for changing a default: the gain holds on every required set (mean difference > 0 on each) and
    the 95% interval on their union excludes zero (from above). `per_set`: set name -> per-question differences."""
    means = {name: float(np.mean(v)) for name, v in per_set.items()}
    ci = bootstrap_ci(union(per_set))
    missing = [r for r in required if r not in per_set]
    if missing:
        return Verdict(means, ci, False, f"does not pass (not measured on {', '.join(missing)})")
    holds = all(m > 0 for m in means.values())
    if holds and ci[1] > 0:
        return Verdict(means, ci, True, "passes")
    if ci[2] < 0:
        return Verdict(means, ci, False, "does not pass (worse, the interval is below zero)")
    if not holds and ci[1] > 0:
        return Verdict(means, ci, False, "does not pass (the gain does not hold on every set)")
    return Verdict(means, ci, False, "does not pass (inside the noise)")


def spread(vals):
    """(mean, max − min) of a list of per-seed values."""
    return (sum(vals) / len(vals), max(vals) - min(vals))


def check_stats(ranks, stats, tol=1e-9):
    """Mismatches between means recomputed from per-question ranks ({system: {qa_id: rank}}) and the eval
    manifest's `<system>/document/<metric>` stats. An empty list: they agree."""
    bad = []
    for system, r in ranks.items():
        for metric in METRICS:
            key = f"{system}/document/{metric}"
            if key in stats and abs(mean_metric(r, metric) - stats[key]) > tol:
                bad.append(f"{key}: parquet {mean_metric(r, metric):.12f} vs manifest {stats[key]:.12f}")
    return bad


def nested_subsample(ids, sizes, seed):
    """{size: set of ids}: one seeded shuffle of the sorted ids, cut at each size, so smaller sets lie inside
    larger ones. A size of None (or more than there are) keeps every id."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return {k: set(order if k is None else order[:k]) for k in sizes}


def split_halves(names, seed):
    """Two disjoint halves of the sorted names by a seeded shuffle (the first gets the odd one)."""
    order = sorted(set(names))
    random.Random(seed).shuffle(order)
    cut = (len(order) + 1) // 2
    return sorted(order[:cut]), sorted(order[cut:])


def qrels_ids(text):
    """The query ids in a qrels file (header line first)."""
    return {line.split("\t")[0].strip() for line in text.splitlines()[1:] if line.strip()}


def filter_qrels(text, keep):
    """A qrels file with only the lines of the query ids in `keep` (the header kept)."""
    lines = text.splitlines()
    body = [line for line in lines[1:] if line.strip() and line.split("\t")[0].strip() in keep]
    return "\n".join([lines[0], *body]) + "\n"


def per_project(diffs_by_qa, project_of):
    """{project: (n, mean difference)} from {qa_id: difference} and {query id: project}."""
    groups = {}
    for qa, d in diffs_by_qa.items():
        groups.setdefault(project_of.get(query_id(qa), "?"), []).append(d)
    return {p: (len(v), sum(v) / len(v)) for p, v in sorted(groups.items())}


def read_doc_ranks(path):
    """eval_queries.parquet -> {system: {qa_id: rank or None}} at document level."""
    t = pq.read_table(path, columns=["qa_id", "system", "level", "rank"]).to_pydict()
    out = {}
    for qa, system, level, rank in zip(t["qa_id"], t["system"], t["level"], t["rank"]):
        if level != "document":
            continue
        d = out.setdefault(system, {})
        if qa in d:
            raise ValueError(f"{path}: {system} ranks {qa} twice")
        d[qa] = rank
    return out


# ------------------------------------------------------------------------------------------------------------
# Formatting

def fmt_spread(vals):
    if not vals:
        return "–"
    m, s = spread(vals)
    return f"{m:.3f} ± {s:.3f}" if len(vals) > 1 else f"{m:.3f}"


def fmt_ci(ci):
    m, lo, hi = ci
    if math.isnan(m):
        return "–"
    return f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def cpu_line():
    """The CPU model and whether the SIMD extensions that matter for ONNX Runtime / libtorch are present."""
    model, flags, n = "unknown", set(), 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "processor":
                    n += 1
                elif key == "model name" and model == "unknown":
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    have = ", ".join(f"{x} {'yes' if x in flags else 'no'}" for x in ["avx2", "avx512f", "avx512_vnni", "amx_tile"])
    return f"CPU: {model}, {n} logical CPUs; {have}"


# ------------------------------------------------------------------------------------------------------------
# Datasets

@dataclass
class Dataset:
    name: str
    path: str
    project_of: dict  # query id -> project
    train: set  # train query ids
    test: set  # test query ids


def load_dataset(name, path):
    project_of = {}
    with open(os.path.join(path, "queries.jsonl")) as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                project_of[q["_id"]] = q.get("project", "?")
    qrels = {}
    for split in ["train", "test"]:
        p = os.path.join(path, "qrels", f"{split}.tsv")
        qrels[split] = qrels_ids(open(p).read()) if os.path.isfile(p) else set()
    return Dataset(name, path, project_of, qrels["train"], qrels["test"])


def write_if_changed(path, data):
    """Write bytes only when they differ, so the pipeline's file-hash cache (size, mtime, inode) stays valid."""
    if os.path.isfile(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def derive(src, name, train_keep, test_keep):
    """A copy of BEIR folder `src` under DERIVED/name whose qrels keep only the given query ids (None: all)."""
    dst = os.path.join(DERIVED, name)
    for f in ["corpus.jsonl", "queries.jsonl"]:
        with open(os.path.join(src.path, f), "rb") as fh:
            write_if_changed(os.path.join(dst, f), fh.read())
    for split, keep in [("train", train_keep), ("test", test_keep)]:
        with open(os.path.join(src.path, "qrels", f"{split}.tsv")) as fh:
            text = fh.read()
        write_if_changed(os.path.join(dst, "qrels", f"{split}.tsv"),
                         (text if keep is None else filter_qrels(text, keep)).encode())
    return load_dataset(name, dst)


# ------------------------------------------------------------------------------------------------------------
# Running the pipeline

class RunFailed(Exception):
    pass


@dataclass
class Run:
    stats: dict
    ranks: dict  # system -> {qa_id: rank}; `served` added when the manifest names it
    wall: float
    ran: list  # the stages that ran (empty: all cached)
    train_stats: dict = field(default_factory=dict)


def set_args(dataset_path, overrides, seed):
    """The `--set` arguments of one dataset, experiment and seed."""
    args = ["--set", f"ingest.path={dataset_path}", "--set", f"artifacts_dir={ARTS}", "--set", f"train.seed={seed}"]
    for o in overrides:
        args += ["--set", o]
    return args


def show(stage, args, cwd):
    """`coltrast show STAGE`: (artifact dir, manifest stats)."""
    out = subprocess.run([BIN, "show", stage, *args], cwd=cwd, capture_output=True, text=True, check=True).stdout
    path = next(l.split(None, 1)[1].strip() for l in out.splitlines() if l.startswith("artifact:"))
    stats = json.loads(out[out.index("manifest:\n") + len("manifest:\n"):])["stats"]
    return (path if os.path.isabs(path) else os.path.join(cwd, path)), stats


class Runner:
    """Runs the pipeline once per (dataset, overrides, seed) and remembers the result."""

    def __init__(self):
        self.cwd = tempfile.mkdtemp(prefix="coltrast-quality-")
        self.done = {}
        self.failed = []

    def get(self, ds, overrides, seed):
        key = (ds.path, tuple(overrides), seed)
        if key in self.done:
            if self.done[key] is None:
                raise RunFailed(f"{ds.name} {list(overrides)} seed {seed}")
            return self.done[key]
        self.done[key] = None
        args = set_args(ds.path, overrides, seed)
        print(f"[quality] run {ds.name} {' '.join(overrides) or 'defaults'} seed {seed}", file=sys.stderr, flush=True)
        t = time.time()
        p = subprocess.run([BIN, "run", *args], cwd=self.cwd, capture_output=True, text=True)
        wall = time.time() - t
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-4000:])
            self.failed.append(f"{ds.name} {list(overrides)} seed {seed}")
            raise RunFailed(f"{ds.name} {list(overrides)} seed {seed}")
        ran = [l.split()[0] for l in p.stderr.splitlines() if len(l.split()) > 1 and l.split()[1] == "ran"]
        try:
            eval_dir, stats = show("eval", args, self.cwd)
            ranks = read_doc_ranks(os.path.join(eval_dir, "eval_queries.parquet"))
        except (subprocess.CalledProcessError, OSError, ValueError, KeyError, StopIteration) as e:
            self.failed.append(f"{ds.name} {list(overrides)} seed {seed} (reading eval: {e})")
            raise RunFailed(f"{ds.name} {list(overrides)} seed {seed}: reading eval failed ({e})")
        served = stats.get("served_system")
        if isinstance(served, str) and served in ranks:
            ranks[SERVED] = ranks[served]
        # Also checks `served/document/ndcg@10` where the manifest has it.
        bad = check_stats(ranks, stats)
        if bad:  # the analysis would be wrong: stop loudly
            raise SystemExit(f"[quality] {ds.name} seed {seed}: eval_queries.parquet disagrees with the manifest:\n  "
                             + "\n  ".join(bad))
        try:
            _, train_stats = show("train", args, self.cwd)
        except subprocess.CalledProcessError:
            train_stats = {}
        run = Run(stats, ranks, wall, ran, train_stats)
        self.done[key] = run
        return run

    def runs(self, ds, overrides, seeds):
        return [self.get(ds, overrides, s) for s in seeds]


def systems_of(runs, wanted=None):
    """The systems present in every run, in report order (`served` last, only where every seed has it)."""
    names = list(wanted) if wanted else [*SYSTEMS, SERVED]
    return [s for s in names if all(s in r.ranks for r in runs)]


def seed_avg(runs, system, metric="ndcg@10"):
    """{qa_id: metric averaged over the runs' seeds} for one system."""
    return seed_mean([per_query(r.ranks[system], metric) for r in runs])


def diff_ci(runs, a, b, metric="ndcg@10"):
    """(per-question difference vector, bootstrap CI) of system a − system b, paired over the same seeds."""
    d = paired_diff(seed_avg(runs, a, metric), seed_avg(runs, b, metric))
    return d, bootstrap_ci(d)


# ------------------------------------------------------------------------------------------------------------
# Reports

def seed_lines(runs, seeds):
    """One line per seed: what the pipeline chose and what it cost."""
    for seed, r in zip(seeds, runs):
        s, t = r.stats, r.train_stats
        best = f"{s.get('best_system', '–')} ({s['best_gain_ndcg@10']:+.3f})" if "best_gain_ndcg@10" in s else "–"
        served = s.get("served_system", "– (no served_system stat)")
        if s.get("served_model"):
            served += f" ({s['served_model']} model)"
        reason = f" ({s['served_reason']})" if s.get("served_reason") else ""
        print(f"- seed {seed}: best {best}; served {served}{reason}; base_mix {t.get('base_mix', '–')}; val best "
              f"lexical / rerank weight {s.get('val_best_lexical_weight', '–')} / "
              f"{s.get('val_best_rerank_weight', '–')}; best/run epochs {t.get('best_epoch', '–')}/"
              f"{t.get('epochs_run', '–')}; train peak RSS {t.get('peak_rss_mb', '–')} MiB; wall {r.wall:.0f} s "
              f"({'ran ' + ', '.join(r.ran) if r.ran else 'all cached'})")


def system_table(runs, systems):
    """Per system: the three metrics (mean ± spread over seeds) and the paired nDCG@10 differences."""
    print("| system | nDCG@10 | R@1 | MRR@10 | Δ nDCG@10 vs base-whole [95% CI] | Δ nDCG@10 vs base [95% CI] |")
    print("|---|---|---|---|---|---|")
    for sysname in systems:
        cells = [fmt_spread([mean_metric(r.ranks[sysname], m) for r in runs]) for m in METRICS]
        vs = [fmt_ci(diff_ci(runs, sysname, ref)[1]) if sysname != ref else "" for ref in ["base-whole", "base"]]
        print(f"| {sysname} | {' | '.join(cells)} | {' | '.join(vs)} |")


def project_table(runs_by_set, datasets):
    """Per project and set: n test questions, coltrast − base and served − base (mean per-question nDCG@10)."""
    print("| set | project | test questions | coltrast − base | served − base |")
    print("|---|---|---|---|---|")
    for name, runs in runs_by_set.items():
        pairs = {}
        for sysname in ["coltrast", SERVED]:
            if sysname in systems_of(runs):
                a, b = seed_avg(runs, sysname), seed_avg(runs, "base")
                pairs[sysname] = per_project({k: a[k] - b[k] for k in a}, datasets[name].project_of)
        if not pairs:
            continue
        for proj, (n, _) in next(iter(pairs.values())).items():
            cells = [f"{pairs[s][proj][1]:+.3f}" if s in pairs else "–" for s in ["coltrast", SERVED]]
            print(f"| {name} | {proj} | {n} | {' | '.join(cells)} |")


def verdict_line(label, per_set, required):
    v = decide(per_set, required)
    sets = ", ".join(f"{n} {m:+.3f} ({'holds' if m > 0 else 'does not hold'})" for n, m in v.means.items())
    print(f"- **{label}**: {sets}; union ({len(union(per_set))} questions) {fmt_ci(v.union_ci)}: **{v.why}**")
    return v


def run_experiment(name, runner, datasets):
    exp = EXPERIMENTS[name]
    is_lever = bool(exp.overrides)
    print(f"\n### {name}: {exp.desc}\n")
    runs_by_set, defaults_by_set = {}, {}
    for ds in datasets.values():
        try:
            runs = runner.runs(ds, exp.overrides, exp.seeds)
            if is_lever:
                defaults_by_set[ds.name] = runner.runs(ds, (), exp.seeds)
        except RunFailed as e:
            print(f"**{ds.name}**: run failed ({e}); skipped\n")
            continue
        runs_by_set[ds.name] = runs
        n = len(next(iter(runs[0].ranks.values())))
        print(f"**{ds.name}** ({n} test questions, seeds {', '.join(map(str, exp.seeds))})\n")
        system_table(runs, systems_of(runs, exp.systems))
        print()
        if exp.systems is None:
            seed_lines(runs, exp.seeds)
        else:
            walls = [f"seed {s} {r.wall:.0f} s ({'ran ' + ', '.join(r.ran) if r.ran else 'all cached'})"
                     for s, r in zip(exp.seeds, runs)]
            print(f"- wall per run: {', '.join(walls)}")
        print()
    if not runs_by_set:
        return
    shown = [s for s in systems_of([r for rs in runs_by_set.values() for r in rs], exp.systems)]

    # Union of both sets' test questions: the same paired differences, concatenated.
    if len(runs_by_set) > 1:
        print(f"**union of {' and '.join(runs_by_set)}**\n")
        print("| system | Δ nDCG@10 vs base-whole [95% CI] | Δ nDCG@10 vs base [95% CI] |")
        print("|---|---|---|")
        for sysname in shown:
            cells = []
            for ref in ["base-whole", "base"]:
                vecs = {n: diff_ci(rs, sysname, ref)[0] for n, rs in runs_by_set.items()}
                cells.append(fmt_ci(bootstrap_ci(union(vecs))) if sysname != ref else "")
            print(f"| {sysname} | {' | '.join(cells)} |")
        print()

    if exp.systems is None:
        print("Per project (mean per-question nDCG@10 difference, averaged over seeds):\n")
        project_table(runs_by_set, datasets)
        print()

    required = list(DATASETS)  # the rule needs both dev sets, even where one is missing here
    if not is_lever:
        # The defaults: does fine-tuning (and what is served) hold against the baselines?
        for sysname in ["coltrast", SERVED]:
            for ref in ["base-whole", "base"]:
                if all(sysname in systems_of(rs) for rs in runs_by_set.values()):
                    per_set = {n: diff_ci(rs, sysname, ref)[0] for n, rs in runs_by_set.items()}
                    verdict_line(f"{sysname} − {ref}", per_set, required)
        return

    # A lever against the defaults, system by system, paired per question over the same seeds.
    print("Lever − defaults, same system, same seeds (Δ nDCG@10 [95% CI]):\n")
    print(f"| system | {' | '.join(runs_by_set)} | union | note |")
    print(f"|---|{'---|' * len(runs_by_set)}---|---|")
    lever_diffs = {}
    for sysname in shown:
        per_set = {}
        for n, rs in runs_by_set.items():
            ds_ = defaults_by_set[n]
            if sysname not in systems_of(ds_):
                break
            per_set[n] = paired_diff(seed_avg(rs, sysname), seed_avg(ds_, sysname))
        else:
            same = all(r.ranks[sysname] == d.ranks[sysname] for n in runs_by_set
                       for r, d in zip(runs_by_set[n], defaults_by_set[n]))
            lever_diffs[sysname] = per_set
            cells = [fmt_ci(bootstrap_ci(v)) for v in per_set.values()] + [fmt_ci(bootstrap_ci(union(per_set)))]
            print(f"| {sysname} | {' | '.join(cells)} | {'same ranks as the defaults' if same else ''} |")
    print()
    deciding = next((s for s in exp.decide if s in lever_diffs), None)
    if deciding is None:
        print(f"- **decision ({name})**: no deciding system measured ({', '.join(exp.decide)}): **does not pass**")
    else:
        verdict_line(f"decision ({name}, {deciding}: lever − defaults)", lever_diffs[deciding], required)


def data_experiment_report(column, runs_by_split, datasets, pooled_label):
    """coltrast − base and served − base with intervals for each derived dataset (and pooled over them), and per
    project."""
    print(f"| {column} | train questions | test questions | base nDCG@10 | coltrast nDCG@10 | "
          "coltrast − base [95% CI] | served − base [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    vecs = {"coltrast": {}, SERVED: {}}
    for split, runs in runs_by_split.items():
        ds = datasets[split]
        cells = []
        for sysname in ["coltrast", SERVED]:
            if sysname in systems_of(runs):
                d, ci = diff_ci(runs, sysname, "base")
                vecs[sysname][split] = d
                cells.append(fmt_ci(ci))
            else:
                cells.append("–")
        base = fmt_spread([mean_metric(r.ranks["base"], "ndcg@10") for r in runs])
        col = fmt_spread([mean_metric(r.ranks["coltrast"], "ndcg@10") for r in runs])
        print(f"| {split} | {len(ds.train)} | {len(ds.test)} | {base} | {col} | {' | '.join(cells)} |")
    if pooled_label and len(runs_by_split) > 1:
        cells = [fmt_ci(bootstrap_ci(union(vecs[s]))) if len(vecs[s]) == len(runs_by_split) else "–"
                 for s in ["coltrast", SERVED]]
        print(f"| {pooled_label} | | {sum(len(datasets[s].test) for s in runs_by_split)} | | | {' | '.join(cells)} |")
    print("\nPer project (coltrast − base / served − base, mean per-question nDCG@10 difference):\n")
    splits = list(runs_by_split)
    print(f"| project | test questions | {' | '.join(splits)} |")
    print(f"|---|---|{'---|' * len(splits)}")
    table = {}
    for split, runs in runs_by_split.items():
        for sysname in ["coltrast", SERVED]:
            if sysname in systems_of(runs):
                a, b = seed_avg(runs, sysname), seed_avg(runs, "base")
                for proj, (n, m) in per_project({k: a[k] - b[k] for k in a}, datasets[split].project_of).items():
                    table.setdefault(proj, {"n": n}).setdefault(split, {})[sysname] = m
    for proj, row in sorted(table.items()):
        cells = []
        for split in splits:
            c = row.get(split, {})
            cells.append(" / ".join(f"{c[s]:+.3f}" if s in c else "–" for s in ["coltrast", SERVED]) if c else "")
        print(f"| {proj} | {row['n']} | {' | '.join(cells)} |")


def run_curve(runner, datasets):
    print(f"\n### curve: {DATA_EXPERIMENTS['curve']}\n")
    src = datasets.get(CURVE_SOURCE)
    if src is None:
        print(f"(skipped: {CURVE_SOURCE} not found or not in QUALITY_SETS)")
        return
    subsets = nested_subsample(src.train, CURVE_SIZES, DATA_SEED)
    print(f"Train questions: a nested random subsample (seed {DATA_SEED}) of {CURVE_SOURCE}'s {len(src.train)}; the "
          f"{len(src.test)} test questions never change. Seeds {', '.join(map(str, SEEDS))}; per-question nDCG@10 "
          "averaged over seeds.\n")
    derived, runs_by_size = {}, {}
    for size in CURVE_SIZES:
        label = f"all ({len(src.train)})" if size is None else str(size)
        # All train questions: the original folder itself, so the defaults' runs are reused.
        ds = src if size is None else derive(src, f"curve-{size}", subsets[size], None)
        derived[label] = ds
        try:
            runs_by_size[label] = runner.runs(ds, (), SEEDS)
        except RunFailed as e:
            print(f"- size {label}: run failed ({e}); skipped\n")
    if runs_by_size:
        data_experiment_report("size", runs_by_size, derived, None)
        for label, runs in runs_by_size.items():
            print(f"\nsize {label}:")
            seed_lines(runs, SEEDS)


def run_curve_lever(runner, datasets):
    """The learning curve's subsamples, trained with a lever's overrides and with the defaults (same seeds): per
    size, coltrast − base and served − base for both, and lever − defaults paired per question."""
    lever = os.environ.get("QUALITY_CURVE_LEVER", "")
    if lever not in EXPERIMENTS or lever == "defaults":
        raise SystemExit(f"[quality] curve-lever: set QUALITY_CURVE_LEVER to an experiment name "
                         f"({', '.join(n for n in EXPERIMENTS if n != 'defaults')})")
    sizes = [int(x) for x in os.environ.get("QUALITY_CURVE_SIZES", "50").split(",") if x.strip()]
    exp = EXPERIMENTS[lever]
    print(f"\n### curve-lever: {exp.desc} on the learning curve ({', '.join(map(str, sizes))} train questions)\n")
    src = datasets.get(CURVE_SOURCE)
    if src is None:
        print(f"(skipped: {CURVE_SOURCE} not found or not in QUALITY_SETS)")
        return
    bad = [z for z in sizes if z not in CURVE_SIZES]
    if bad:
        raise SystemExit(f"[quality] curve-lever: sizes {bad} are not curve sizes {CURVE_SIZES[:-1]}")
    subsets = nested_subsample(src.train, CURVE_SIZES, DATA_SEED)
    print(f"Train questions: the curve's nested subsample (seed {DATA_SEED}) of {CURVE_SOURCE}'s {len(src.train)}; "
          f"the {len(src.test)} test questions never change. Seeds {', '.join(map(str, SEEDS))}.\n")
    derived, by_label = {}, {}
    for size in sizes:
        ds = derive(src, f"curve-{size}", subsets[size], None)
        for label, overrides in [(f"{size} defaults", ()), (f"{size} {lever}", exp.overrides)]:
            derived[label] = ds
            try:
                by_label[label] = runner.runs(ds, overrides, SEEDS)
            except RunFailed as e:
                print(f"- {label}: run failed ({e}); skipped\n")
    if not by_label:
        return
    data_experiment_report("run", by_label, derived, None)
    print("\nLever − defaults, same size, same seeds (Δ nDCG@10 [95% CI]):\n")
    print("| size | coltrast | served |")
    print("|---|---|---|")
    for size in sizes:
        a, b = by_label.get(f"{size} {lever}"), by_label.get(f"{size} defaults")
        if a is None or b is None:
            continue
        cells = [fmt_ci(bootstrap_ci(paired_diff(seed_avg(a, s), seed_avg(b, s)))) if s in systems_of(a + b)
                 else "–" for s in ["coltrast", SERVED]]
        print(f"| {size} | {' | '.join(cells)} |")
    for label, runs in by_label.items():
        print(f"\n{label}:")
        seed_lines(runs, SEEDS)


def run_lpo(runner, datasets):
    print(f"\n### lpo: {DATA_EXPERIMENTS['lpo']}\n")
    src = datasets.get(CURVE_SOURCE)
    if src is None:
        print(f"(skipped: {CURVE_SOURCE} not found or not in QUALITY_SETS)")
        return
    projects = {src.project_of[q] for q in src.train | src.test if q in src.project_of}
    h1, h2 = split_halves(projects, DATA_SEED)
    splits = {"A": (h1, h2), "B": (h2, h1)}
    derived, runs_by_split = {}, {}
    for name, (train_p, test_p) in splits.items():
        keep_train = {q for q in src.train if src.project_of.get(q) in train_p}
        keep_test = {q for q in src.test if src.project_of.get(q) in test_p}
        ds = derive(src, f"lpo-{name}", keep_train, keep_test)
        derived[name] = ds
        print(f"- split {name}: train on {', '.join(train_p)}; test on {', '.join(test_p)}")
        try:
            runs_by_split[name] = runner.runs(ds, (), SEEDS)
        except RunFailed as e:
            print(f"- split {name}: run failed ({e}); skipped")
    print(f"\nProjects split by a seeded (seed {DATA_SEED}) shuffle of the sorted names; seeds "
          f"{', '.join(map(str, SEEDS))}. The corpus keeps every project's passages.\n")
    if runs_by_split:
        data_experiment_report("split", runs_by_split, derived, "pooled A + B")
        for name, runs in runs_by_split.items():
            print(f"\nsplit {name}:")
            seed_lines(runs, SEEDS)


# ------------------------------------------------------------------------------------------------------------
# Checks kept from the earlier bench

def check_tuned_dirs(name, runner, ds):
    """SentenceTransformer(path) on each seed's fine-tuned model dir against coltrast's export of it (ort) and
    Python onnxruntime on that model.onnx, over the first 64 passages of the dataset."""
    ex, py = os.environ.get("SERVE_BENCH"), os.environ.get("BENCH_PY")
    if not ex or not py:
        print(f"- {name}: SERVE_BENCH/BENCH_PY not set; the fine-tuned model dirs were not loaded by "
              "sentence-transformers")
        return
    exp = EXPERIMENTS[name]
    corpus = os.path.join(ds.path, "corpus.jsonl")
    for seed in exp.seeds:
        model_dir = os.path.join(show("train", set_args(ds.path, exp.overrides, seed), runner.cwd)[0], "model")
        tmp = tempfile.mkdtemp(prefix="coltrast-quality-st-")
        vec, onnx_dir = os.path.join(tmp, "ours.f32"), os.path.join(tmp, "onnx")
        subprocess.run([ex, "embed", corpus, model_dir, vec, "64", "1", "none", onnx_dir], check=True,
                       capture_output=True)
        out = subprocess.run([py, "bench/ort_st.py", model_dir, corpus, "64", vec, "1", onnx_dir], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        c, po = r["cosines"][vec], r["python_onnxruntime"]
        print(f"- {name} seed {seed} ({ds.name}): SentenceTransformer(fine-tuned dir) vs coltrast's ort export: min "
              f"cos {c['min_cos']:.7f}; Python onnxruntime on that model.onnx vs sentence-transformers: min cos "
              f"{po['vs_sentence_transformers']['min_cos']:.7f}, vs coltrast: {po['vs_coltrast']['min_cos']:.7f} "
              f"({r['passages']} passages, max_seq_length {r['max_seq_length']})", flush=True)


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
    print(f"- sample: default pipeline cold {wall:.1f} s (goal < 90 s, issue 22); {right}/4 example questions right; "
          f"last line: `{last}`")


# ------------------------------------------------------------------------------------------------------------
# Self-check on synthetic data

def selftest():
    failures = []

    def check(cond, what):
        print(f"{'ok  ' if cond else 'FAIL'} {what}")
        if not cond:
            failures.append(what)

    # Per-question metrics from ranks.
    check(metrics_from_rank(1) == {"ndcg@10": 1.0, "recall@1": 1.0, "mrr@10": 1.0}, "rank 1 scores 1, 1, 1")
    m3 = metrics_from_rank(3)
    check(abs(m3["ndcg@10"] - 0.5) < 1e-15 and m3["recall@1"] == 0 and abs(m3["mrr@10"] - 1 / 3) < 1e-15,
          "rank 3: nDCG 1/log2(4) = 0.5, R@1 0, MRR 1/3")
    check(metrics_from_rank(10)["ndcg@10"] > 0 and metrics_from_rank(11)["ndcg@10"] == 0
          and metrics_from_rank(None) == {"ndcg@10": 0.0, "recall@1": 0.0, "mrr@10": 0.0},
          "rank 10 counts, rank 11 and not retrieved score 0")
    check(query_id("q7#2") == "q7" and query_id("q7") == "q7", "query_id strips #k")

    # Paired bootstrap: a known difference excludes zero; identical systems give 0 and an interval containing 0.
    rng = np.random.default_rng(123)
    n = 200
    base = rng.uniform(0, 1, n)
    better = base + 0.1 + rng.normal(0, 0.05, n)
    ka = {f"q{i}": float(better[i]) for i in range(n)}
    kb = {f"q{i}": float(base[i]) for i in range(n)}
    ci = bootstrap_ci(paired_diff(ka, kb))
    check(abs(ci[0] - 0.1) < 0.02 and excludes_zero(ci) and ci[1] < ci[0] < ci[2],
          f"known +0.1 difference: {fmt_ci(ci)} excludes zero")
    ci0 = bootstrap_ci(paired_diff(kb, kb))
    check(ci0 == (0.0, 0.0, 0.0) and not excludes_zero(ci0), f"identical systems: {fmt_ci(ci0)} contains zero")
    noise = rng.choice([-1.0, 1.0], 100) * 0.3
    noise -= noise.mean()
    cin = bootstrap_ci(noise)
    check(abs(cin[0]) < 1e-12 and not excludes_zero(cin), f"zero-mean noise: {fmt_ci(cin)} contains zero")
    check(bootstrap_ci(noise) == cin, "the bootstrap is reproducible")
    try:
        paired_diff({"a": 1.0}, {"b": 1.0})
        check(False, "paired_diff refuses different questions")
    except ValueError:
        check(True, "paired_diff refuses different questions")
    check(seed_mean([{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}]) == {"a": 0.5, "b": 0.0}, "seed_mean averages")
    m, sp = spread([0.8, 0.9, 0.85])
    check(abs(m - 0.85) < 1e-12 and abs(sp - 0.1) < 1e-12, "mean ± spread (max − min)")

    # Union and the decision rule.
    good = {"v3": np.full(50, 0.05) + rng.normal(0, 0.01, 50), "dev": np.full(20, 0.04) + rng.normal(0, 0.01, 20)}
    check(len(union(good)) == 70, "the union concatenates the sets' questions")
    check(decide(good, ["v3", "dev"]).passes, "a gain on both sets with a clear union interval passes")
    mixed = {"v3": np.full(50, 0.05), "dev": np.full(20, -0.01)}
    v = decide(mixed, ["v3", "dev"])
    check(not v.passes and "every set" in v.why, f"a gain on one set only does not pass ({v.why})")
    flat = {"v3": noise, "dev": -noise[:40]}
    v = decide(flat, ["v3", "dev"])
    check(not v.passes and "noise" in v.why, f"noise does not pass ({v.why})")
    v = decide({"v3": good["v3"]}, ["v3", "dev"])
    check(not v.passes and "not measured" in v.why, f"one set missing does not pass ({v.why})")
    v = decide({"v3": -good["v3"], "dev": -good["dev"]}, ["v3", "dev"])
    check(not v.passes and "worse" in v.why, f"a clear loss does not pass ({v.why})")

    # Subsamples and project splits.
    ids = [f"q{i}" for i in range(195)]
    sub = nested_subsample(ids, CURVE_SIZES, DATA_SEED)
    check([len(sub[k]) for k in CURVE_SIZES] == [25, 50, 100, 195], "curve sizes 25, 50, 100, all")
    check(sub[25] < sub[50] < sub[100] < sub[None], "the subsamples are nested")
    check(nested_subsample(list(reversed(ids)), CURVE_SIZES, DATA_SEED) == sub, "the subsample ignores input order")
    check(nested_subsample(ids, [25], 1)[25] != sub[25], "another data seed gives another subsample")
    h1, h2 = split_halves([f"p{i}" for i in range(19)], DATA_SEED)
    check(len(h1) == 10 and len(h2) == 9 and not set(h1) & set(h2), "project halves: 10 + 9, disjoint")
    qrels = "query-id\tcorpus-id\tscore\na\td1\t1\nb\td2\t1\na\td3\t1\n"
    check(filter_qrels(qrels, {"a"}) == "query-id\tcorpus-id\tscore\na\td1\t1\na\td3\t1\n", "filter_qrels")
    check(qrels_ids(qrels) == {"a", "b"}, "qrels_ids")
    check(per_project({"a": 0.2, "b#1": 0.0, "c": -0.1}, {"a": "x", "b": "x", "c": "y"})
          == {"x": (2, 0.1), "y": (1, -0.1)}, "per_project groups by the question's project")

    # The parquet reader and the manifest cross-check, on a file written like the eval stage's.
    tmp = tempfile.mkdtemp(prefix="quality-selftest-")
    rows = [("q1", "base", "document", 1), ("q2", "base", "document", 3), ("q3", "base", "document", None),
            ("q1", "base", "chunk", 2), ("q1", "coltrast", "document", 2), ("q2", "coltrast", "document", 1),
            ("q3", "coltrast", "document", 12)]
    schema = pa.schema([("qa_id", pa.utf8(), False), ("system", pa.utf8(), False), ("level", pa.utf8(), False),
                        ("rank", pa.int64(), True)])
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(schema.names)}, schema=schema)
    path = os.path.join(tmp, "eval_queries.parquet")
    pq.write_table(table, path)
    ranks = read_doc_ranks(path)
    check(ranks == {"base": {"q1": 1, "q2": 3, "q3": None}, "coltrast": {"q1": 2, "q2": 1, "q3": 12}},
          "read_doc_ranks: document level only, null rank as None")
    stats = {"base/document/ndcg@10": 0.5, "base/document/recall@1": 1 / 3, "base/document/mrr@10": (1 + 1 / 3) / 3,
             "coltrast/document/ndcg@10": (1 / math.log2(3) + 1) / 3, "best_system": "coltrast"}
    check(check_stats(ranks, stats) == [], "the parquet means agree with matching manifest stats")
    check(len(check_stats(ranks, {**stats, "base/document/ndcg@10": 0.5 + 1e-6})) == 1,
          "a manifest stat off by 1e-6 is flagged")

    # Derived datasets: the curve and lpo folders keep the corpus and filter the qrels.
    global DERIVED
    saved, DERIVED = DERIVED, os.path.join(tmp, "derived")
    try:
        src_dir = os.path.join(tmp, "src")
        os.makedirs(os.path.join(src_dir, "qrels"))
        with open(os.path.join(src_dir, "corpus.jsonl"), "w") as f:
            f.write('{"_id": "d1", "text": "x"}\n')
        with open(os.path.join(src_dir, "queries.jsonl"), "w") as f:
            for q, p in [("a", "x"), ("b", "y"), ("c", "x")]:
                f.write(json.dumps({"_id": q, "text": q, "project": p}) + "\n")
        with open(os.path.join(src_dir, "qrels", "train.tsv"), "w") as f:
            f.write("query-id\tcorpus-id\tscore\na\td1\t1\nb\td1\t1\n")
        with open(os.path.join(src_dir, "qrels", "test.tsv"), "w") as f:
            f.write("query-id\tcorpus-id\tscore\nc\td1\t1\n")
        src = load_dataset("src", src_dir)
        check(src.train == {"a", "b"} and src.test == {"c"} and src.project_of["b"] == "y", "load_dataset")
        d = derive(src, "t", {"a"}, None)
        check(d.train == {"a"} and d.test == {"c"} and os.path.isfile(os.path.join(d.path, "corpus.jsonl")),
              "derive keeps the corpus and test, filters train")
        mtime = os.stat(os.path.join(d.path, "qrels", "train.tsv")).st_mtime_ns
        time.sleep(0.01)
        derive(src, "t", {"a"}, None)
        check(os.stat(os.path.join(d.path, "qrels", "train.tsv")).st_mtime_ns == mtime,
              "an unchanged derived file is not rewritten")
    finally:
        DERIVED = saved
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nselftest: {'FAILED: ' + str(len(failures)) if failures else 'all passed'}")
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------------------------

def main(argv):
    if argv[:1] == ["--selftest"]:
        return selftest()
    if argv[:1] == ["--list"]:
        for name, exp in EXPERIMENTS.items():
            print(f"{name}{' (default)' if name in DEFAULT_LIST else ''}: {exp.desc}")
        for name, desc in DATA_EXPERIMENTS.items():
            print(f"{name}{' (default)' if name in DEFAULT_LIST else ''}: {desc}")
        return 0
    names = argv or DEFAULT_LIST
    unknown = [n for n in names if n not in EXPERIMENTS and n not in DATA_EXPERIMENTS]
    if unknown:
        raise SystemExit(f"[quality] unknown experiment(s) {unknown}; known: "
                         f"{', '.join([*EXPERIMENTS, *DATA_EXPERIMENTS])}")
    global BIN
    BIN = os.environ["BIN"]
    datasets = {}
    for name, path in DATASETS_RUN.items():
        if os.path.isfile(os.path.join(path, "corpus.jsonl")):
            datasets[name] = load_dataset(name, path)
        else:
            env = "AI_FAQ_DEV_V3" if name.endswith("v3") else "AI_FAQ_DEV"
            print(f"[quality] skipping {name}: not found at {path} (set {env}=...)")
    if not datasets:
        print("[bench] skipping quality: no dev set found")
        return 0
    runner = Runner()
    t0 = time.time()
    print("## Retrieval quality: " + ", ".join(f"{d.name} ({len(d.test)} test questions)" for d in datasets.values())
          + ", document level\n")
    print(cpu_line())
    print(f"\nTraining seeds {SEEDS}; metrics are mean ± spread (max − min) over seeds. Δ: the mean paired "
          "per-question difference in nDCG@10 (each question's metric averaged over seeds first) with a 95% "
          f"percentile bootstrap interval over test questions ({RESAMPLES:,} resamples, RNG seed {BOOT_SEED}). "
          "base-whole is the untuned base model over whole passages (what a user already has); base is the untuned "
          "base model over coltrast's chunks; served is the system the eval manifest names as served_system. A "
          "lever passes when its gain over the defaults (same system, same seeds) holds on both dev sets and its "
          "interval on their union excludes zero.")
    print(f"\nExperiments: {', '.join(names)}.")
    for name in names:
        if name == "curve":
            run_curve(runner, datasets)
        elif name == "lpo":
            run_lpo(runner, datasets)
        elif name == "curve-lever":
            run_curve_lever(runner, datasets)
        else:
            run_experiment(name, runner, datasets)
        sys.stdout.flush()
    if "mpnet" in names:
        print()
        check_ds = datasets.get("ai_faq_dev") or next(iter(datasets.values()))
        try:
            check_tuned_dirs("mpnet", runner, check_ds)
        except subprocess.CalledProcessError as e:
            print(f"- mpnet: the model-dir check failed ({e})")
    print(f"\nQuality experiments: {time.time() - t0:.0f} s wall in all.")
    if runner.failed:
        print(f"\nFailed runs: {'; '.join(runner.failed)}")
    print()
    sample_cold()
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
