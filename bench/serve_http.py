"""`make bench` section serve-http: a load test of `coltrast serve` on loopback against the peer users build
today (FastAPI + uvicorn + sentence-transformers + faiss-cpu, bench/serve_peer.py) serving the same model
(the base MiniLM, `export.model = "base"`) and the same FAISS index (BoolQ's 2,939 passages, Flat), in the
same run. Closed-loop load from examples/http_load.rs at concurrency 1, 8 and 32 on `/v1/search` (k=10,
BoolQ questions), alternating the two servers round by round; medians over rounds.
Then (with SERVE_BENCH set) `POST /v1/embeddings` with 32 passages a request against the same encoder
in-process, per engine (EMBED_ENGINES, default "onnxruntime:auto,openvino:auto").
Usage: python3 bench/serve_http.py  (env: BIN, HTTP_LOAD, BENCH_PY, MODEL_DIR, BOOLQ, SERVE_BENCH; HTTP_ROUNDS,
HTTP_SECONDS, EMBED_N; HTTP_EMBED_ONLY=1 runs only the embeddings part)
"""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

BIN, LOAD, PY, MODEL, BOOLQ = (os.environ[k] for k in ["BIN", "HTTP_LOAD", "BENCH_PY", "MODEL_DIR", "BOOLQ"])
ROUNDS, SECONDS = int(os.environ.get("HTTP_ROUNDS", "2")), float(os.environ.get("HTTP_SECONDS", "20"))
LEVELS = [(1, 400), (8, 3000), (32, 6000)]
here = os.path.dirname(os.path.abspath(__file__))
# The project lives in the cache so that a rerun finds every stage cached.
tmp = os.path.join(os.environ.get("COLTRAST_CACHE", os.path.expanduser("~/.cache/coltrast")), "bench-serve-http")
shutil.rmtree(os.path.join(tmp, "boolq"), ignore_errors=True)
SERVE_ARGS = os.environ.get("SERVE_ARGS", "").split()
SYSTEMS = os.environ.get("HTTP_SYSTEMS", "coltrast,peer").split(",")

# BoolQ with every passage but only 16 questions' qrels, so the (unused) train stage is short; the index
# is the base model's over all 2,939 passages.
data = os.path.join(tmp, "boolq")
os.makedirs(data)
shutil.copy(os.path.join(BOOLQ, "corpus.jsonl"), data)
shutil.copy(os.path.join(BOOLQ, "queries.jsonl"), data)
with open(os.path.join(BOOLQ, "qrels.tsv")) as f, open(os.path.join(data, "qrels.tsv"), "w") as g:
    lines = f.read().splitlines()
    g.write("\n".join(lines[:17]) + "\n")
proj = os.path.join(tmp, "project")
os.makedirs(proj, exist_ok=True)
with open(os.path.join(proj, "pipeline.toml"), "w") as f:
    f.write(f'[ingest]\npath = "{data}"\n[chunk]\nstrategy = "none"\n[train]\nepochs = 1\n[export]\nmodel = "base"\n')
t = time.time()
subprocess.run([BIN, "run", "index"], cwd=proj, check=True, capture_output=True)
print(f"(pipeline to the index stage: {time.time() - t:.0f} s)", file=sys.stderr)
latest = lambda stage: open(os.path.join(proj, "artifacts", stage, "latest")).read().strip()
index_dir = os.path.join(proj, "artifacts", "index", latest("index"))
chunks = os.path.join(proj, "artifacts", "chunk", latest("chunk"), "chunks.parquet")

bodies = os.path.join(tmp, "bodies.jsonl")
with open(os.path.join(BOOLQ, "queries.jsonl")) as f, open(bodies, "w") as g:
    for line in f.read().splitlines()[:300]:
        g.write(json.dumps({"query": json.loads(line)["text"], "k": 10}) + "\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url, proc, seconds=180):
    end = time.time() + seconds
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} never became ready")


def load(port):
    rows = []
    for conc, n in LEVELS:
        out = subprocess.run([LOAD, f"http://127.0.0.1:{port}/v1/search", bodies, str(conc), str(n), str(SECONDS)],
                             check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    return rows


def serve_and_load(cmd, ready_path, port, cwd=None):
    """Start a server, wait until `ready_path` answers 200, load it, stop it with SIGTERM."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"http://127.0.0.1:{port}{ready_path}", p)
        return load(port)
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


def ours():
    port = free_port()
    return serve_and_load([BIN, "serve", "--port", str(port)] + SERVE_ARGS, "/readyz", port, cwd=proj)


def peer():
    port = free_port()
    cmd = [PY, os.path.join(here, "serve_peer.py"), MODEL, os.path.join(index_dir, "index.faiss"), chunks, str(port), "256"]
    return serve_and_load(cmd, "/healthz", port)


# --- /v1/embeddings against the same encoder in-process (issue 23) ---------------------------------------------
# N_EMBED BoolQ passages (`title + " " + text`), one client, EMBED_BATCH per request, sequential; the same
# passages through examples/serve_bench.rs `embed` (the same engine, in-process) in the same round.
EX = os.environ.get("SERVE_BENCH")
N_EMBED, EMBED_BATCH = int(os.environ.get("EMBED_N", "600")), 32
ENGINES = [e for e in os.environ.get("EMBED_ENGINES", "onnxruntime:auto,openvino:auto").split(",") if e]
passages = []
with open(os.path.join(BOOLQ, "corpus.jsonl")) as f:
    for line in f:
        d = json.loads(line)
        passages.append((d.get("title") or "") + " " + d["text"])
        if len(passages) >= N_EMBED:
            break


def engine_env(spec):
    engine, precision = spec.split(":")
    env = dict(os.environ)
    env["COLTRAST_MODEL__ENGINE"], env["COLTRAST_MODEL__PRECISION"] = engine, precision
    return env


def post(port, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/embeddings", data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def http_embed(spec):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--port", str(port)] + SERVE_ARGS, cwd=proj, env=engine_env(spec),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait(f"http://127.0.0.1:{port}/readyz", p)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info") as r:
            info = json.loads(r.read())["model"]
        post(port, {"input": passages[:EMBED_BATCH]})  # warm-up, as serve_bench's first batch
        t = time.perf_counter()
        for i in range(0, len(passages), EMBED_BATCH):
            out = post(port, {"input": passages[i:i + EMBED_BATCH]})
            assert len(out["data"]) == len(passages[i:i + EMBED_BATCH])
        return len(passages) / (time.perf_counter() - t), f"{info['engine']} {info['precision']}"
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)


def inproc_embed(spec):
    out = os.path.join(tmp, "inproc.f32")
    r = subprocess.run([EX, "embed", os.path.join(BOOLQ, "corpus.jsonl"), MODEL, out, str(N_EMBED), "1", "none"],
                       env=engine_env(spec), check=True, capture_output=True, text=True).stdout
    d = json.loads([l for l in r.splitlines() if l.startswith("{")][-1])
    return d["per_s"], f"{d['engine']} {d['computes_in']}"


def embed_section():
    rates, labels = {}, {}
    for _ in range(ROUNDS):
        for spec in ENGINES:
            for where, f in (("in-process", inproc_embed), ("http", http_embed)):
                r, label = f(spec)
                rates.setdefault((spec, where), []).append(r)
                labels[(spec, where)] = label
    print(f"\n## `POST /v1/embeddings` against the same encoder in-process\n")
    print(f"{N_EMBED} BoolQ passages, {EMBED_BATCH} per request, one sequential client on 127.0.0.1 (JSON floats, "
          f"parsed), against examples/serve_bench.rs embedding the same passages in-process with the same engine; "
          f"{ROUNDS} alternating rounds (medians). Client and server share the 2 cores.\n")
    print("| engine (settings) | runs as | in-process passages/s | /v1/embeddings passages/s | HTTP / in-process |")
    print("|---|---|---|---|---|")
    for spec in ENGINES:
        a = statistics.median(rates[(spec, "in-process")])
        b = statistics.median(rates[(spec, "http")])
        print(f"| {spec.replace(':', ', precision ')} | {labels[(spec, 'http')]} | {a:.1f} | {b:.1f} | "
              f"**{b / a:.2f}x** |")
    print("\ngoal: /v1/embeddings at 32 passages a request >= 0.90x the in-process rate. Raw (passages/s): "
          + "; ".join(f"{k[0]} {k[1]} " + ", ".join(f"{x:.1f}" for x in v) for k, v in rates.items()))


if os.environ.get("HTTP_EMBED_ONLY") == "1":
    embed_section()
    raise SystemExit(0)

runs = {"coltrast": [], "peer": []}
for _ in range(ROUNDS):
    if "coltrast" in SYSTEMS:
        runs["coltrast"].append(ours())
    if "peer" in SYSTEMS:
        runs["peer"].append(peer())
if SYSTEMS != ["coltrast", "peer"]:
    for s in SYSTEMS:
        for i, (conc, _) in enumerate(LEVELS):
            r = runs[s]
            print(f"{s} {' '.join(SERVE_ARGS)} c{conc}: {statistics.median(x[i]['rps'] for x in r):.0f} req/s, "
                  f"p50 {statistics.median(x[i]['p50_ms'] for x in r):.2f} p99 {statistics.median(x[i]['p99_ms'] for x in r):.2f} ms")
    raise SystemExit(0)


def med(system, i, key):
    return statistics.median(r[i][key] for r in runs[system])


print(f"## HTTP serving: `coltrast serve` against FastAPI + uvicorn + sentence-transformers + faiss-cpu\n")
print(f"`POST /v1/search` (k=10) over BoolQ's {2939} passages (Flat index, the base MiniLM for both), 300 BoolQ "
      f"questions cycled, closed loop from examples/http_load.rs on 127.0.0.1, {ROUNDS} alternating rounds "
      f"(medians), up to {SECONDS:.0f} s per level, 2 cores shared by client and server.\n")
print("| concurrency | coltrast req/s | peer req/s | throughput ratio | coltrast p50 / p99 | peer p50 / p99 | errors (ours / peer) |")
print("|---|---|---|---|---|---|---|")
for i, (conc, _) in enumerate(LEVELS):
    ours_rps, peer_rps = med("coltrast", i, "rps"), med("peer", i, "rps")
    errs = (sum(r[i]["errors"] for r in runs["coltrast"]), sum(r[i]["errors"] for r in runs["peer"]))
    print(f"| {conc} | {ours_rps:.0f} | {peer_rps:.1f} | **{ours_rps / peer_rps:.1f}x** | "
          f"{med('coltrast', i, 'p50_ms'):.2f} / {med('coltrast', i, 'p99_ms'):.2f} ms | "
          f"{med('peer', i, 'p50_ms'):.1f} / {med('peer', i, 'p99_ms'):.1f} ms | {errs[0]} / {errs[1]} |")
c32 = med("coltrast", 2, "rps") / med("peer", 2, "rps")
p99_8 = med("coltrast", 1, "p99_ms")
print(f"\ngoals: throughput at concurrency 32 >= 5x the peer's: {c32:.1f}x ({'met' if c32 >= 5 else 'NOT met'}); "
      f"p99 at concurrency 8 <= 20 ms: {p99_8:.2f} ms ({'met' if p99_8 <= 20 else 'NOT met'})")
print("\nraw:", json.dumps(runs), file=sys.stderr)
if EX:
    embed_section()
