"""Issue 5: what the embedding cache saves when one document changes. Embeds N BoolQ passages through the index
stage's cached path (sentence + token embeddings) cold, after one passage changed, and unchanged; the cold pass
is the baseline in the same run.
Usage: python3 bench/reindex.py  (env: REINDEX_BENCH, MODEL_DIR, BOOLQ; REINDEX_N)
"""
import json
import os
import subprocess

EX, MODEL, BOOLQ = os.environ["REINDEX_BENCH"], os.environ["MODEL_DIR"], os.environ["BOOLQ"]
N = os.environ.get("REINDEX_N", "2939")
out = subprocess.run([EX, os.path.join(BOOLQ, "corpus.jsonl"), MODEL, N], check=True, capture_output=True, text=True)
rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
cold = rows[0]["seconds"]
print(f"## Re-indexing after one passage changes ({rows[0]['passages']} BoolQ passages, float32 export, "
      "sentence + token embeddings through the (model hash, text hash) cache)\n")
print("| pass | texts embedded | seconds | vs cold |")
print("|---|---|---|---|")
for r in rows:
    print(f"| {r['pass']} | {r['embedded']} | {r['seconds']:.3f} | {r['seconds'] / cold:.4f}x |")
