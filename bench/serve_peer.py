"""The peer for `make bench` section serve-http: what users build today, FastAPI + uvicorn +
sentence-transformers + faiss-cpu, serving the same model and the same FAISS index as `coltrast serve`, with
the same `/v1/search` request and response shape. Binds 127.0.0.1 only.
Usage: python serve_peer.py MODEL_DIR INDEX.faiss CHUNKS.parquet PORT MAX_SEQ_LENGTH
"""
import sys
import time

import faiss
import pyarrow.parquet as pq
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

model_dir, index_path, chunks_path, port, max_len = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = max_len
index = faiss.read_index(index_path)
table = pq.read_table(chunks_path, columns=["project_id", "chunk_id", "text"]).to_pydict()
app = FastAPI()


class SearchRequest(BaseModel):
    query: str
    k: int = 5


@app.post("/v1/search")
def search(req: SearchRequest):
    t = time.perf_counter()
    v = model.encode([req.query], normalize_embeddings=True, convert_to_numpy=True)
    scores, ids = index.search(v, req.k)
    hits = [
        {"project_id": table["project_id"][i], "chunk_id": table["chunk_id"][i], "score": float(s), "text": table["text"][i]}
        for s, i in zip(scores[0], ids[0])
        if i >= 0
    ]
    return {"hits": hits, "took_ms": (time.perf_counter() - t) * 1e3}


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
