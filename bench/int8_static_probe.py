"""Probe for issue 23's static int8 path: which of coltrast's dense layers can take one calibrated (static)
activation scale per tensor, and what a QDQ model of the float32 export would gain on OpenVINO and ONNX Runtime.

It is a probe, not a coltrast feature: the quantised models are made here by onnxruntime.quantization's
`quantize_static` (QDQ format, int8 weights per output channel, uint8 activations, MinMax calibration), from
coltrast's own float32 export (`serve_bench embed ... none ONNX_DIR`). Calibration uses 64 BoolQ passages
(1000..1063), never the timed or scored ones (0..N-1).

1. Sensitivity: each of the six dense layers of an encoder layer (Q, K, V, attention output, FFN in, FFN out),
   quantised alone in every layer: min / mean cosine of the pooled embedding to float32 over 100 passages.
2. Speed: the float32 export on OpenVINO (bf16 where the CPU computes it) and ONNX Runtime, against the QDQ model
   of every dense layer but the FFN output, N passages in batches of 32 (sorted by length, tokenised once, not
   timed), alternating rounds, medians, with the cosine to float32.

Usage: BENCH=int8-probe make bench (env: SERVE_BENCH, MODEL_DIR, BOOLQ; PROBE_N, PROBE_ROUNDS)
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from tokenizers import Tokenizer

from cpu_race import FLAGS, cpu  # the race's CPU probe (needs the same env: SERVE_BENCH, BENCH_PY, ...)

EX, MODEL, BOOLQ = os.environ["SERVE_BENCH"], os.environ["MODEL_DIR"], os.environ["BOOLQ"]
N, ROUNDS = int(os.environ.get("PROBE_N", "600")), int(os.environ.get("PROBE_ROUNDS", "2"))
LAYER_PARTS = ["Q", "K", "V", "attention output", "FFN in", "FFN out"]


def cpu_line():
    model, flags, n = cpu()
    return f"CPU: {model}, {n} logical CPUs; " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in FLAGS)


def main():
    tmp = tempfile.mkdtemp(prefix="coltrast-int8-probe-")
    onnx_dir = os.path.join(tmp, "onnx")
    corpus = os.path.join(BOOLQ, "corpus.jsonl")
    # coltrast's float32 export (and its tokenizer) via the bench example
    subprocess.run([EX, "embed", corpus, MODEL, os.path.join(tmp, "v.f32"), "8", "1", "none", onnx_dir],
                   check=True, capture_output=True)
    f32 = os.path.join(onnx_dir, "model.onnx")
    tok = Tokenizer.from_file(os.path.join(onnx_dir, "tokenizer.json"))
    tok.enable_truncation(256)
    texts = []
    for line in open(corpus):
        d = json.loads(line)
        texts.append(f"{d.get('title', '')} {d['text']}")  # as serve_bench joins them

    def feed(ts):
        enc = tok.encode_batch(ts)
        width = max(len(e.ids) for e in enc)
        ids = np.zeros((len(enc), width), np.int64)
        mask = np.zeros_like(ids)
        for j, e in enumerate(enc):
            ids[j, :len(e.ids)] = e.ids
            mask[j, :len(e.ids)] = 1
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}

    calibration = [feed([t]) for t in texts[1000:1064]]  # one passage per run: no padding in the ranges

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calibration)

        def get_next(self):
            return next(self.it, None)

    graph = onnx.load(f32)
    weights = {i.name for i in graph.graph.initializer}
    dense = [n.name for n in graph.graph.node if n.op_type == "MatMul" and any(x in weights for x in n.input)]
    if len(dense) % 6:
        raise SystemExit(f"[int8-probe] {len(dense)} weight MatMuls: not six per encoder layer")

    def qdq(nodes, path):
        quantize_static(f32, path, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                        nodes_to_quantize=nodes, per_channel=True, weight_type=QuantType.QInt8,
                        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax)
        return path

    def ort_session(path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = os.cpu_count()
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        return lambda f: s.run(["sentence_embedding"], f)[0]

    core = ov.Core()

    def ov_model(path, precision):
        c = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"})
        req = c.create_infer_request()
        out = c.output("sentence_embedding")

        def run(f):
            req.infer(f)
            return req.get_tensor(out).data.copy()
        return run

    def cos(a, b):
        c = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return float(c.min()), float(c.mean())

    print(f"## Static int8 probe: coltrast's float32 export, QDQ by onnxruntime.quantization ({N} BoolQ passages)\n")
    print(cpu_line() + "\n")
    scored = [feed([t]) for t in texts[:100]]
    ref_run = ort_session(f32)
    ref = np.concatenate([ref_run(f) for f in scored])
    print("### Which dense layers take a static per-tensor activation scale\n")
    print("Each part quantised alone in all layers (ONNX Runtime), cosine of the pooled embedding to float32 over "
          "100 passages:\n")
    print("| dense layer | min cos | mean cos |")
    print("|---|---|---|")
    for part, name in enumerate(LAYER_PARTS):
        nodes = [n for j, n in enumerate(dense) if j % 6 == part]
        run = ort_session(qdq(nodes, os.path.join(tmp, f"part{part}.onnx")))
        lo, mean = cos(np.concatenate([run(f) for f in scored]), ref)
        print(f"| {name} | {lo:.5f} | {mean:.5f} |", flush=True)

    t = time.time()
    static = qdq([n for j, n in enumerate(dense) if j % 6 != 5], os.path.join(tmp, "static.onnx"))
    print(f"\n### Speed: every dense layer but the FFN output static int8 (quantize_static {time.time() - t:.1f} s)\n")
    order = sorted(range(N), key=lambda i: len(tok.encode(texts[i]).ids))
    batches = [(order[s:s + 32], feed([texts[i] for i in order[s:s + 32]])) for s in range(0, N, 32)]
    systems = {
        "float32, ONNX Runtime": ort_session(f32),
        "float32, OpenVINO (bf16 where native)": ov_model(f32, "bf16"),
        "QDQ int8, ONNX Runtime": ort_session(static),
        "QDQ int8, OpenVINO (rest bf16 where native)": ov_model(static, "bf16"),
        "QDQ int8, OpenVINO (rest f32)": ov_model(static, "f32"),
    }
    rates, vecs = {k: [] for k in systems}, {}
    for _ in range(ROUNDS):
        for name, run in systems.items():
            out = np.zeros((N, ref.shape[1]), np.float32)
            t = time.time()
            for idx, f in batches:
                out[idx] = run(f)
            rates[name].append(N / (time.time() - t))
            vecs[name] = out
    base = statistics.median(rates["float32, OpenVINO (bf16 where native)"])
    print("| system | passages/s (median) | rounds | vs float32 on OpenVINO | cos to float32 ONNX Runtime (min / mean) |")
    print("|---|---|---|---|---|")
    for name in systems:
        lo, mean = cos(vecs[name], vecs["float32, ONNX Runtime"])
        med = statistics.median(rates[name])
        print(f"| {name} | {med:.1f} | {', '.join(f'{r:.1f}' for r in rates[name])} | {med / base:.2f}x | "
              f"{lo:.5f} / {mean:.5f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
