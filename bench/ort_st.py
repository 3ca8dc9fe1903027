"""Baseline for the ort benchmark: sentence-transformers on the same BoolQ passages (title + " " + text), at the
model's own max_seq_length, and the cosine between its vectors and coltrast's (raw f32 files, one per export;
comma-separated).

With ONNX_DIR (a coltrast ONNX export: model.onnx, onnx_model.json, tokenizer.json), Python's onnxruntime also runs
that model.onnx on the same passages (tokenised by the `tokenizers` package from the export's tokenizer.json,
truncated at its max_seq_length, one passage per run, so without padding), and the cosine of its vectors to
sentence-transformers' and to the first f32 file is reported: the export gives the same vectors outside coltrast.

Usage: python bench/ort_st.py MODEL_DIR CORPUS.jsonl N COLTRAST.f32[,MORE.f32] REPEATS [ONNX_DIR]
"""
import json
import os
import sys
import time

import numpy as np
from sentence_transformers import SentenceTransformer

model_dir, corpus, n, ours, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
onnx_dir = sys.argv[6] if len(sys.argv) > 6 else None
docs = []
for line in open(corpus, encoding="utf-8"):
    d = json.loads(line)
    docs.append(d["title"] + " " + d["text"])
    if len(docs) >= n:
        break
m = SentenceTransformer(model_dir, device="cpu")
m.encode(docs[:8])
times = []
for _ in range(repeats):
    t = time.perf_counter()
    e = m.encode(docs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    times.append(time.perf_counter() - t)


def cos_to(a, b):
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"min_cos": float(cos.min()), "mean_cos": float(cos.mean())}


paths = ours.split(",")
cosines = {path: cos_to(np.fromfile(path, dtype="<f4").reshape(len(docs), -1), e) for path in paths}
times.sort()
med = times[len(times) // 2]
result = {"system": "sentence-transformers", "max_seq_length": m.max_seq_length, "passages": len(docs),
          "seconds": times, "median_s": med, "per_s": len(docs) / med, "cosines": cosines}
if onnx_dir:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    info = json.load(open(os.path.join(onnx_dir, "onnx_model.json")))
    tok = Tokenizer.from_file(os.path.join(onnx_dir, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(info["max_seq_length"])
    sess = ort.InferenceSession(os.path.join(onnx_dir, info["model_file"]), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    rows = []
    for d in docs:
        ids = np.array([tok.encode(d).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        rows.append(sess.run(["sentence_embedding"], {k: v for k, v in feed.items() if k in wanted})[0][0])
    py = np.stack(rows)
    result["python_onnxruntime"] = {"version": ort.__version__, "onnx_dir": onnx_dir,
                                    "vs_sentence_transformers": cos_to(py, e),
                                    "vs_coltrast": cos_to(py, np.fromfile(paths[0], dtype="<f4").reshape(len(docs), -1))}
print(json.dumps(result))
