"""Baseline for the ort benchmark: sentence-transformers on the same BoolQ passages (title + " " + text),
max_seq_length 256, and the cosine between its vectors and coltrast's (raw f32 files, one per export; comma-separated).
Usage: python bench/ort_st.py MODEL_DIR CORPUS.jsonl N COLTRAST.f32[,MORE.f32] REPEATS
"""
import json
import sys
import time

import numpy as np
from sentence_transformers import SentenceTransformer

model_dir, corpus, n, ours, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
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
cosines = {}
for path in ours.split(","):
    mine = np.fromfile(path, dtype="<f4").reshape(len(docs), -1)
    cos = (mine * e).sum(1) / (np.linalg.norm(mine, axis=1) * np.linalg.norm(e, axis=1))
    cosines[path] = {"min_cos": float(cos.min()), "mean_cos": float(cos.mean())}
times.sort()
med = times[len(times) // 2]
print(json.dumps({"system": "sentence-transformers", "passages": len(docs), "seconds": times, "median_s": med,
                  "per_s": len(docs) / med, "cosines": cosines}))
