"""Baseline for the encoder benchmark: sentence-transformers on the same sentences, same batch size.

Usage: python bench/embed_st.py MODEL_DIR SENTENCES.txt BATCH REPEATS  (prints one JSON line)
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, path, batch, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sentences = [l.rstrip("\n") for l in open(path, encoding="utf-8")]
model = SentenceTransformer(model_dir, device="cpu")
model.encode(sentences[:batch], batch_size=batch)  # warm-up
times = []
for _ in range(repeats):
    t = time.perf_counter()
    e = model.encode(sentences, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
    times.append(time.perf_counter() - t)
    assert e.shape[0] == len(sentences)
times.sort()
med = times[len(times) // 2]
print(json.dumps({"system": "sentence-transformers", "sentences": len(sentences), "batch": batch, "seconds": times,
                  "median_s": med, "per_s": len(sentences) / med, "threads": torch.get_num_threads()}))
