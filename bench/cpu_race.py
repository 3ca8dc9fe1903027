"""CPU embedding race (issue 23): coltrast against the peers a user switches to in one line, on the CPU at hand.

Every system embeds the same N BoolQ passages (`title + " " + text`, batch 32, the model's max_seq_length, 2
threads), in its own process, once per round; the rounds alternate the systems (ROUNDS, default 2) and the
table gives medians. Peers (sentence-transformers, bench/st_peer.py):
- `backend="torch"` (float32), `backend="onnx"` (float32, ONNX Runtime), `backend="openvino"` (OpenVINO; it
  computes in bf16 where the CPU has AMX, in f32 elsewhere: the precision column says which);
- OpenVINO static int8, made the way sentence-transformers' `export_static_quantized_openvino_model` makes it
  (optimum-intel's OVQuantizer with OVQuantizationConfig), calibrated on CALIB other BoolQ passages, never the
  timed ones.
coltrast: its float32 and int8 ONNX exports in ort, in-process (examples/serve_bench.rs), and the float32 export
on OpenVINO (`model.engine = "openvino"`) with `model.precision` f32 and bf16 (bf16 is what OpenVINO computes in
only where the CPU has native bf16, AMX or AVX-512 BF16: the precision column is what the engine reports).
OpenVINO cannot run coltrast's int8 export (its per-token activation scales), so there is no OpenVINO int8 row.

Printed: the CPU model and its flags (avx2, avx512f, avx512_vnni, amx_tile, amx_bf16), passages/s, the ratio
to the fastest peer and to sentence-transformers torch, the cosine to sentence-transformers float32 (min /
mean), and for each int8 row the BoolQ nDCG@10 (2,939 passages, 3,270 questions) against the float32 row of the
same engine.

Usage: "$BENCH_PY" bench/cpu_race.py   (the bench venv: numpy; env: SERVE_BENCH, BENCH_PY, MODEL_DIR, BOOLQ; RACE_N (600), RACE_CALIB
(300), ROUNDS (2), RACE_GATE=0 skips the BoolQ columns)
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile

EX, PY, MODEL, BOOLQ = os.environ["SERVE_BENCH"], os.environ["BENCH_PY"], os.environ["MODEL_DIR"], os.environ["BOOLQ"]
N, CALIB = int(os.environ.get("RACE_N", "600")), int(os.environ.get("RACE_CALIB", "300"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
GATE = os.environ.get("RACE_GATE", "1") != "0"
THREADS = 2
PEERS = ["st-torch", "st-onnx", "st-openvino", "st-openvino-int8"]
# name: (export.quantize, model.engine, model.precision)
OURS = {
    "coltrast-f32": ("none", "onnxruntime", "auto"),
    "coltrast-int8": ("int8", "onnxruntime", "auto"),
    "coltrast-ov-f32": ("none", "openvino", "f32"),
    "coltrast-ov-bf16": ("none", "openvino", "bf16"),
}
LABEL = {
    "st-torch": 'sentence-transformers, `backend="torch"`',
    "st-onnx": 'sentence-transformers, `backend="onnx"`',
    "st-openvino": 'sentence-transformers, `backend="openvino"`',
    "st-openvino-int8": "sentence-transformers, OpenVINO static int8",
    "coltrast-f32": "coltrast float32 export (ort, in-process)",
    "coltrast-int8": "coltrast int8 export (ort, in-process)",
    "coltrast-ov-f32": 'coltrast float32 export, `model.engine = "openvino"`, precision f32',
    "coltrast-ov-bf16": 'coltrast float32 export, `model.engine = "openvino"`, precision bf16',
}


def engine_env(engine, precision):
    env = dict(os.environ)
    env["COLTRAST_MODEL__ENGINE"], env["COLTRAST_MODEL__PRECISION"] = engine, precision
    return env
FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]


def cpu():
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags, os.cpu_count()


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"[race] {' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def vectors(path, n):
    import numpy as np
    return np.fromfile(path, dtype="<f4").reshape(n, -1)


def cosines(a, b):
    import numpy as np
    c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(c.min()), float(c.mean())


def main():
    model_name, flags, ncpu = cpu()
    tmp = tempfile.mkdtemp(prefix="coltrast-race-")
    copy = os.path.join(tmp, "model")
    shutil.copytree(MODEL, copy)
    corpus = os.path.join(BOOLQ, "corpus.jsonl")
    texts = []
    for line in open(corpus, encoding="utf-8"):
        d = json.loads(line)
        texts.append((d.get("title") or "") + " " + d["text"].replace("\n", " "))
        if len(texts) >= N + CALIB:
            break
    passages, calib = os.path.join(tmp, "passages.txt"), os.path.join(tmp, "calib.txt")
    open(passages, "w", encoding="utf-8").write("\n".join(texts[:N]) + "\n")
    open(calib, "w", encoding="utf-8").write("\n".join(texts[N:N + CALIB]) + "\n")
    prep = run_json([PY, "bench/st_peer.py", "prepare", copy, calib])[0]

    rates = {s: [] for s in PEERS + list(OURS)}
    precision = {}
    out = {s: os.path.join(tmp, f"{s}.f32") for s in rates}
    for _ in range(ROUNDS):
        for s in PEERS:
            r = run_json([PY, "bench/st_peer.py", "embed", s, copy, passages, out[s], str(THREADS)])[0]
            rates[s].append(r["per_s"])
            precision[s] = r["precision"]
        for s, (mode, engine, prec) in OURS.items():
            r = run_json([EX, "embed", corpus, MODEL, out[s], str(N), "1", mode], env=engine_env(engine, prec))[0]
            rates[s].append(r["per_s"])
            precision[s] = r["computes_in"]
    med = {s: statistics.median(v) for s, v in rates.items()}
    ref = vectors(out["st-torch"], N)
    cos = {s: cosines(vectors(out[s], N), ref) for s in rates}
    fastest = max(PEERS, key=lambda s: med[s])

    gate = {}
    if GATE:
        for s in ("st-openvino", "st-openvino-int8"):
            gate[s] = run_json([PY, "bench/st_peer.py", "boolq", s, copy, BOOLQ, str(THREADS)])[0]["ndcg@10"]
        for s, (mode, engine, prec) in OURS.items():
            if s == "coltrast-ov-f32":
                continue  # f32 on another engine: the cosine column says it is the same vectors
            gate[s] = run_json([EX, "boolq", BOOLQ, MODEL, mode], env=engine_env(engine, prec))[0]["ndcg@10"]
    f32_of = {"st-openvino-int8": "st-openvino", "coltrast-int8": "coltrast-f32", "coltrast-ov-bf16": "coltrast-f32"}

    has = lambda f: "yes" if f in flags else "no"  # noqa: E731
    print(f"## CPU race: {N} BoolQ passages, batch 32, {THREADS} threads, {ROUNDS} alternating rounds\n")
    print(f"CPU: {model_name}, {ncpu} logical CPUs; " + ", ".join(f"{f} {has(f)}" for f in FLAGS) + "\n")
    print(f"OpenVINO static int8 calibrated on {prep['calibration_passages']} other BoolQ passages "
          f"(export {prep['export_s']:.0f} s, quantisation {prep['quantize_s']:.0f} s, untimed).\n")
    print("| system | computes in | passages/s (median) | vs fastest peer | vs st torch | cosine to st float32 (min / mean) "
          "| BoolQ nDCG@10 (int8: vs the same engine's non-int8 path; coltrast bf16: vs coltrast f32) |")
    print("|---|---|---|---|---|---|---|")
    for s in PEERS + list(OURS):
        g = ""
        if s in gate:
            g = f"{gate[s]:.4f}"
            if s in f32_of and f32_of[s] in gate:
                g += f" ({gate[s] - gate[f32_of[s]]:+.4f})"
        print(f"| {LABEL[s]} | {precision[s]} | {med[s]:.1f} | {med[s] / med[fastest]:.2f}x | "
              f"{med[s] / med['st-torch']:.2f}x | {cos[s][0]:.5f} / {cos[s][1]:.5f} | {g} |")
    print(f"\nfastest peer: {LABEL[fastest]} ({med[fastest]:.1f} passages/s). Rounds (passages/s): "
          + "; ".join(f"{s} " + ", ".join(f"{x:.1f}" for x in v) for s, v in rates.items()))
    exact = [s for s in OURS if cos[s][0] >= 0.999]
    best = max(exact, key=lambda s: med[s])
    print(f"\ncoltrast's fastest path with cosine >= 0.999 to sentence-transformers float32: {LABEL[best]} "
          f"({precision[best]}), {med[best]:.1f} passages/s = {med[best] / med['st-openvino']:.2f}x "
          f"sentence-transformers' OpenVINO backend, {med[best] / med['coltrast-f32']:.2f}x coltrast's ONNX Runtime "
          f"float32, {med[best] / med[fastest]:.2f}x the fastest peer.")
    amx = "amx_tile" in flags
    avx2_only = "avx2" in flags and "avx512f" not in flags
    kind = "AMX" if amx else ("AVX2-only" if avx2_only else "AVX-512 without AMX")
    print(f"\nThis CPU is {kind}. Issue 23's bars: with AMX, coltrast's fastest path at cos >= 0.999 >= 1.0x "
          "OpenVINO and coltrast int8 >= 1.0x OpenVINO static int8 at equal or better nDCG@10; AVX2-only, float32 "
          ">= 2.0x and int8 >= 4.0x sentence-transformers torch. A figure from one kind of CPU is not evidence for "
          "another.")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
