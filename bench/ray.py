"""Issue 12: the index stage's embedding on Ray versus in-process, BoolQ's passages, all in the same run.

Runs examples/ray_bench (the index stage's path: plan shards of the cache misses, embed them on the executor,
merge them into the caches) on N BoolQ passages as `chunk.strategy = "none"` embeds them, four ways:
local with 1 ONNX Runtime thread, local with every core, Ray with 1 worker node (1 CPU) and Ray with 2 worker
nodes (1 CPU each). The Ray cluster runs on this machine inside a network namespace made here, so Ray binds only
that namespace's loopback (../shared/TOOLCHAIN.md); it is stopped and the namespace removed at the end.
Then a paper estimate of throughput at N nodes from the measured per-shard cost and overhead.
Usage: python3 bench/ray.py  (env: RAY_BENCH, MODEL_DIR, BOOLQ, RAY_VENV; RAY_N, RAY_SHARD)
"""
import json
import os
import subprocess
import sys
import tempfile

EX, MODEL, BOOLQ, VENV = os.environ["RAY_BENCH"], os.environ["MODEL_DIR"], os.environ["BOOLQ"], os.environ["RAY_VENV"]
N = int(os.environ.get("RAY_N", "2939"))
SHARD = int(os.environ.get("RAY_SHARD", "256"))
PORT = "6393"
NS = f"coltrast-raybench-{os.getpid()}"
tmp = tempfile.mkdtemp(prefix="rayb", dir="/tmp")
onnx = os.path.join(tmp, "onnx")
env = dict(os.environ, RAY_TMPDIR=tmp)


def ns(*cmd, **kw):
    return subprocess.run(["ip", "netns", "exec", NS, *cmd], env=env, **kw)


def bench(label, *sets):
    shared = tempfile.mkdtemp(dir=tmp)
    out = ns(EX, os.path.join(BOOLQ, "corpus.jsonl"), MODEL, str(N), onnx,
             f"executor.shard_texts={SHARD}", f"executor.shared_dir={shared}", *sets,
             check=True, capture_output=True, text=True)
    row = json.loads([l for l in out.stdout.splitlines() if l.startswith("{")][-1])
    row["label"] = label
    print(f"[bench ray] {label}: {row['seconds']:.1f} s", file=sys.stderr)
    return row


ray = os.path.join(VENV, "bin", "ray")
subprocess.run(["ip", "netns", "add", NS], check=True)
rows = []
try:
    ns("ip", "link", "set", "lo", "up", check=True)
    # warm-up: the export, and the page cache of model and library
    subprocess.run(["ip", "netns", "exec", NS, EX, os.path.join(BOOLQ, "corpus.jsonl"), MODEL, "64", onnx],
                   env=env, check=True, capture_output=True)
    rows.append(bench("local, 1 thread", "model.threads=1"))
    rows.append(bench("local, all cores (2 threads)", "model.threads=0"))
    ns(ray, "start", "--head", f"--port={PORT}", "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={tmp}/r",
       check=True, capture_output=True)
    addr = ["executor.kind=ray", f"executor.ray_address=127.0.0.1:{PORT}", "executor.task_cpus=1",
            f"executor.worker_bin={os.environ['BIN']}"]
    rows.append(bench("Ray, 1 node x 1 CPU", *addr))
    ns(ray, "start", f"--address=127.0.0.1:{PORT}", "--num-cpus=1", check=True, capture_output=True)
    rows.append(bench("Ray, 2 nodes x 1 CPU", *addr))
finally:
    ns(ray, "stop", "--force", capture_output=True)
    subprocess.run(["ip", "netns", "del", NS])

texts = rows[0]["texts"]
shards = rows[0]["stats"]["shards"]
print(f"## Sharded embedding: local versus Ray ({texts} BoolQ passages, index stage path, sentence + token "
      f"embeddings, shard_texts {SHARD}, {shards} shards)\n")
print("One run, one machine (2 cores, shared with other work: absolute figures are noisy, ratios are from the "
      "same run). Both Ray nodes run on this machine, so \"2 nodes\" shares the same 2 cores as local.\n")
print("| executor | seconds | texts/s | vs local 1 thread | shards per node |")
print("|---|---|---|---|---|")
base = rows[0]["seconds"]
for r in rows:
    per = r["stats"].get("shards_per_node", {})
    split = " / ".join(str(v) for v in per.values()) if per else "-"
    print(f"| {r['label']} | {r['seconds']:.1f} | {r['texts'] / r['seconds']:.1f} | {base / r['seconds']:.2f}x | {split} |")

l1, r1, r2 = rows[0], rows[2], rows[3]
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ray.json"), "w") as f:
    json.dump(rows, f, indent=1)
t_text = l1["seconds"] / texts  # seconds per text on one core, in-process (local merge included)
st = r1["stats"]
# 1 node x 1 CPU runs its tasks one at a time, so its wall time splits cleanly:
#   wall = outside (planning, shard files, driver start and ray.init, gaps between tasks, merge) + sum(attempts)
#   attempt = embedding + in-task overhead (worker process start, model load, Parquet in and out)
t_ray_text = st["shard_embed_s_total"] / texts
o_task = (st["shard_attempt_s_total"] - st["shard_embed_s_total"]) / shards
load = st["shard_load_s_total"] / shards
outside = r1["seconds"] - st["shard_attempt_s_total"]
merge = st["merge_s"]  # reading the outputs back, merging into the caches, flushing: grows with the texts
fixed = outside - merge  # planning, shard files, model copy, driver start and ray.init, gaps between tasks
over_e2e = (r1["seconds"] - l1["seconds"]) / shards
shard_cost = SHARD * t_text
print(f"\n- Per-text cost on one core, in-process: {t_text * 1000:.1f} ms; a shard of {SHARD} texts: {shard_cost:.1f} s. "
      f"Inside the Ray workers the same embedding took {t_ray_text * 1000:.1f} ms per text "
      f"({100 * (t_ray_text / t_text - 1):+.0f}%: Ray's own processes share these 2 cores).")
print(f"- Ray's overhead per shard, inside the task (worker process start, model load {load:.2f} s, Parquet in and "
      f"out): **{o_task:.2f} s** = {100 * o_task / shard_cost:.1f}% of a {SHARD}-text shard's embedding.")
print(f"- Outside the tasks (serial, on the machine that runs coltrast): {outside:.1f} s for the whole run: "
      f"merging the outputs into the caches (read back, insert, flush) {merge:.1f} s = {1000 * merge / texts:.2f} ms "
      f"per text, and {fixed:.1f} s for the rest (planning, shard files, the model's copy to the shared dir, "
      f"the driver's start and ray.init, gaps between tasks).")
print(f"- End to end, Ray 1 node x 1 CPU against local 1 thread: {r1['seconds'] - l1['seconds']:+.1f} s, "
      f"{over_e2e:.2f} s per shard ({100 * over_e2e / shard_cost:.1f}% of a shard), which also holds the slower "
      f"embedding on the shared cores and the serial part.")
need = 20 * o_task / t_text
print(f"- shard_texts that keeps the in-task overhead under 5%: o / (shard_texts x t) < 0.05, so shard_texts > "
      f"20 x {o_task:.2f} / {t_text:.4f} = **{need:.0f}**; the default 1024 gives {100 * o_task / (1024 * t_text):.1f}%. "
      f"Counting the whole end-to-end difference as overhead instead: > {20 * over_e2e / t_text:.0f}.")
print(f"- 2 nodes x 1 CPU against 1 node: {r1['seconds'] / r2['seconds']:.2f}x (both nodes on the same 2 cores "
      f"here, so this is not a scaling figure).")
print("\n### Paper estimate at N nodes\n")
print("T(N) = F + m x texts + ceil(shards / N) x (shard_texts x t + o), throughput = texts / T(N): t the in-process "
      "per-text cost on one core, o the in-task overhead per shard, m the merge cost per text and F the rest of "
      "the serial part, all measured above (F is taken as fixed; planning and shard files do grow with the texts, "
      "but are small next to the merge). 1 task per node. Assumes: nodes like one core of this machine, each its "
      "own machine (no shared cores), the shared dir not a bottleneck (a shard reads its texts and writes its "
      "sentence vectors and f16 token vectors, 768 bytes per token), no stragglers. The merge caps throughput at "
      f"1 / m = {texts / merge:.0f} texts/s whatever N is: past that, merging while shards run would be the next step.\n")
print("| nodes | shard_texts | texts | estimated texts/s | share of time in Ray's fixed and in-task overhead |")
print("|---|---|---|---|---|")
for n_texts in (texts, 1_000_000):
    for sz in (SHARD, 1024):
        n_sh = -(-n_texts // sz)
        for nodes in (1, 2, 8, 64):
            waves = -(-n_sh // nodes)
            t_total = fixed + merge / texts * n_texts + waves * (min(sz, n_texts) * t_text + o_task)
            share = (fixed + waves * o_task) / t_total
            print(f"| {nodes} | {sz} | {n_texts} | {n_texts / t_total:.0f} | {100 * share:.1f}% |")
