"""Issue 3 benchmarks: tch encoder vs sentence-transformers throughput, and chunk-stage wall time on BoolQ.

1. Sentence-embedding throughput on BoolQ passages' sentences (coltrast's splitter), same sentences, same batch
   size, same threads, both in this run, alternating systems; medians and the ratio.
2. chunk stage on BoolQ: cold (empty embedding cache), then after `--set chunk.similarity_threshold=0.8`
   (every sentence from the cache), from the stage's own wall time in its manifest.

Usage: python3 bench/encoder.py  (env: BIN, EXAMPLE, BENCH_PY, MODEL_DIR, BOOLQ)
"""
import json
import os
import shutil
import statistics
import subprocess
import tempfile

BIN, EXAMPLE, PY = os.environ["BIN"], os.environ["EXAMPLE"], os.environ["BENCH_PY"]
MODEL, BOOLQ = os.environ["MODEL_DIR"], os.environ["BOOLQ"]
N, BATCH, ROUNDS = int(os.environ.get("ENC_N", "2000")), 32, int(os.environ.get("ENC_ROUNDS", "3"))

tmp = tempfile.mkdtemp(prefix="coltrast-bench-")
sent_file = os.path.join(tmp, "sentences.txt")


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


rust, st = [], []
for _ in range(ROUNDS):
    rust.append(run_json([EXAMPLE, os.path.join(BOOLQ, "corpus.jsonl"), MODEL, sent_file, str(N), str(BATCH), "1"]))
    st.append(run_json([PY, "bench/embed_st.py", MODEL, sent_file, str(BATCH), "1"]))
r = statistics.median(x["per_s"] for x in rust)
s = statistics.median(x["per_s"] for x in st)
print(f"## Sentence-embedding throughput ({rust[0]['sentences']} BoolQ sentences, batch {BATCH}, "
      f"{rust[0]['threads']} threads, {ROUNDS} alternating rounds)\n")
print("| system | median sentences/s |")
print("|---|---|")
print(f"| coltrast tch encoder | {r:.1f} |")
print(f"| sentence-transformers (torch 2.11, same model) | {s:.1f} |")
print(f"\nratio coltrast / sentence-transformers: **{r / s:.2f}x** (goal >= 1.0)\n")

# chunk stage on BoolQ
proj = os.path.join(tmp, "proj")
os.makedirs(proj)
with open(os.path.join(proj, "pipeline.toml"), "w") as f:
    f.write(f'[ingest]\npath = "{BOOLQ}"\n')


def stage_wall(args):
    subprocess.run([BIN, "run", "chunk", *args], cwd=proj, check=True, capture_output=True)
    out = subprocess.run([BIN, "show", "chunk", *args], cwd=proj, check=True, capture_output=True, text=True).stdout
    m = json.loads(out[out.index("manifest:\n") + len("manifest:\n"):])
    return m["wall_time_s"], m["stats"]


cold, st_cold = stage_wall([])
warm, st_warm = stage_wall(["--set", "chunk.similarity_threshold=0.8"])
print("## chunk stage on BoolQ (2,939 passages)\n")
print("| run | wall time | sentences | sentences embedded | chunks |")
print("|---|---|---|---|---|")
print(f"| cold cache, threshold 0.7 | {cold:.1f} s | {st_cold['sentences']} | {st_cold['sentences_embedded']} | {st_cold['chunks']} |")
print(f"| threshold 0.8 (cache warm) | {warm:.1f} s | {st_warm['sentences']} | {st_warm['sentences_embedded']} | {st_warm['chunks']} |")
shutil.rmtree(tmp, ignore_errors=True)
