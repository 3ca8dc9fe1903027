"""Issue 5 benchmarks: ort embedding throughput vs sentence-transformers on BoolQ passages (same texts, same
max_seq_length, same run, alternating), with the cosine between the two; query latency (encode + search) on
the BoolQ index and on a 100k-vector index.
Usage: python3 bench/serve.py  (env: SERVE_BENCH, BENCH_PY, MODEL_DIR, BOOLQ)
"""
import json
import os
import statistics
import subprocess
import tempfile

EX, PY, MODEL, BOOLQ = os.environ["SERVE_BENCH"], os.environ["BENCH_PY"], os.environ["MODEL_DIR"], os.environ["BOOLQ"]
N, ROUNDS = int(os.environ.get("ORT_N", "600")), int(os.environ.get("ORT_ROUNDS", "3"))
corpus = os.path.join(BOOLQ, "corpus.jsonl")
vec = os.path.join(tempfile.mkdtemp(), "ours.f32")


def run_json(cmd):
    return [json.loads(l) for l in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines() if l.startswith("{")]


ort, st = [], []
for _ in range(ROUNDS):
    ort += run_json([EX, "embed", corpus, MODEL, vec, str(N), "1"])
    st += run_json([PY, "bench/ort_st.py", MODEL, corpus, str(N), vec, "1"])
o = statistics.median(x["per_s"] for x in ort)
s = statistics.median(x["per_s"] for x in st)
print(f"## ONNX Runtime embedding throughput ({N} BoolQ passages, title + text, max_seq_length 256, "
      f"{ROUNDS} alternating rounds, 2 threads)\n")
print("| system | median passages/s |")
print("|---|---|")
print(f"| coltrast (Rust ONNX export, ort fp32) | {o:.1f} |")
print(f"| sentence-transformers (torch 2.11) | {s:.1f} |")
print(f"\nratio: **{o / s:.2f}x** (goal >= 2.0); cosine to sentence-transformers: min {min(x['min_cos'] for x in st):.7f}\n")

lat = run_json([EX, "latency", corpus, os.path.join(BOOLQ, "queries.jsonl"), MODEL, "100000"])
print("## Query latency (one process, model loaded once; encode + search, k=10, 300 BoolQ questions)\n")
print("| index | vectors | p50 | p95 |")
print("|---|---|---|---|")
for r in lat:
    print(f"| {r['index']} | {r['vectors']} | {r['p50_ms']:.2f} ms | {r['p95_ms']:.2f} ms |")
print(f"\nmodel load: {lat[0]['model_load_s']:.2f} s; goal p50 <= 10 ms")
