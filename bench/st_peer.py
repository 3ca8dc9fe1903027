"""One peer of the CPU race (bench/cpu_race.py), in its own process: sentence-transformers with one backend.

  python bench/st_peer.py prepare MODEL_COPY CALIB.txt
      exports the OpenVINO model and its static int8 version into MODEL_COPY/openvino/ (optimum-intel's
      OVQuantizer with OVQuantizationConfig, the path sentence-transformers' export_static_quantized_openvino_model
      takes, but calibrated on the passages of CALIB.txt, one per line, instead of a Hub dataset; nothing is
      fetched). Also exports the ONNX model (MODEL_COPY/onnx/model.onnx). Prints one JSON line.
  python bench/st_peer.py embed SYSTEM MODEL_COPY PASSAGES.txt OUT.f32 THREADS
      embeds the passages (batch 32, normalised) once untimed (warm-up on 8) then timed; writes the vectors as
      little-endian float32 and prints {"system", "per_s", "seconds", "passages", "max_seq_length", "precision"}.
  python bench/st_peer.py boolq SYSTEM MODEL_COPY BOOLQ_DIR THREADS
      nDCG@10, R@1, MRR@10 on BoolQ (every passage, every question of qrels.tsv, exact inner-product search).

SYSTEM: st-torch, st-onnx, st-openvino, st-openvino-int8.
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

OV_INT8 = "openvino/openvino_model_qint8_quantized.xml"


def load(system, model_dir, threads):
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if system == "st-torch":
        return SentenceTransformer(model_dir, device="cpu", backend="torch")
    if system == "st-onnx":
        return SentenceTransformer(model_dir, device="cpu", backend="onnx",
                                   model_kwargs={"file_name": "onnx/model.onnx",
                                                 "provider": "CPUExecutionProvider"})
    ov_config = {"INFERENCE_NUM_THREADS": str(threads)}
    if system == "st-openvino":
        return SentenceTransformer(model_dir, device="cpu", backend="openvino",
                                   model_kwargs={"file_name": "openvino/openvino_model.xml", "ov_config": ov_config})
    if system == "st-openvino-int8":
        return SentenceTransformer(model_dir, device="cpu", backend="openvino",
                                   model_kwargs={"file_name": OV_INT8, "ov_config": ov_config})
    raise SystemExit(f"st_peer: unknown system {system!r}")


def precision(model, system):
    """What the backend computes in: OpenVINO's inference precision hint (bf16 on AMX CPUs by default)."""
    if system == "st-torch" or system == "st-onnx":
        return "f32"
    try:
        compiled = model[0].auto_model.request
        compiled = compiled.get_compiled_model() if hasattr(compiled, "get_compiled_model") else compiled
        raw = str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # e.g. "<type: 'bfloat16'>"
        hint = {"bfloat16": "bf16", "float32": "f32", "f32": "f32", "bf16": "bf16", "float16": "f16",
                "f16": "f16"}.get(raw.split("'")[1] if "'" in raw else raw.lower(), raw)
    except Exception as e:  # another optimum-intel layout
        hint = f"unknown ({type(e).__name__})"
    return f"int8 static, other ops {hint}" if system == "st-openvino-int8" else hint


def prepare(model_dir, calib_file):
    from datasets import Dataset
    from optimum.intel.openvino import OVConfig, OVQuantizationConfig, OVQuantizer
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    # ONNX and OpenVINO float32 exports, saved where sentence-transformers looks for them
    SentenceTransformer(model_dir, device="cpu", backend="onnx").save(model_dir)
    ov = SentenceTransformer(model_dir, device="cpu", backend="openvino")
    ov.save(model_dir)
    t1 = time.perf_counter()
    # static int8 as export_static_quantized_openvino_model does it (the default OVQuantizationConfig, inputs
    # padded to 384 tokens), but calibrated on the given passages instead of a Hub dataset
    calib = [l.rstrip("\n") for l in open(calib_file, encoding="utf-8") if l.strip()]
    ds = Dataset.from_dict({"text": calib}).map(
        lambda b: ov.tokenizer(b["text"], padding="max_length", max_length=384, truncation=True), batched=True,
        remove_columns=["text"])
    config = OVQuantizationConfig(num_samples=len(calib))
    quantizer = OVQuantizer.from_pretrained(ov.transformers_model)
    out = os.path.join(model_dir, "openvino", "q8")
    quantizer.quantize(ds, save_directory=out, ov_config=OVConfig(quantization_config=config))
    saved = out if os.path.exists(os.path.join(out, "openvino_model.xml")) else os.path.join(out, "openvino")
    for ext in ("xml", "bin"):
        os.replace(os.path.join(saved, f"openvino_model.{ext}"),
                   os.path.join(model_dir, OV_INT8.replace(".xml", f".{ext}")))
    t2 = time.perf_counter()
    print(json.dumps({"prepared": model_dir, "export_s": t1 - t0, "quantize_s": t2 - t1,
                      "calibration_passages": len(calib)}))


def embed(system, model_dir, passages_file, out, threads):
    docs = [l.rstrip("\n") for l in open(passages_file, encoding="utf-8")]
    m = load(system, model_dir, threads)
    m.encode(docs[:8], batch_size=32)
    t = time.perf_counter()
    e = m.encode(docs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    dt = time.perf_counter() - t
    e.astype("<f4").tofile(out)
    print(json.dumps({"system": system, "per_s": len(docs) / dt, "seconds": dt, "passages": len(docs),
                      "max_seq_length": m.max_seq_length, "precision": precision(m, system)}))


def boolq(system, model_dir, boolq_dir, threads):
    corpus = [json.loads(l) for l in open(os.path.join(boolq_dir, "corpus.jsonl"), encoding="utf-8")]
    queries = {}
    for l in open(os.path.join(boolq_dir, "queries.jsonl"), encoding="utf-8"):
        q = json.loads(l)
        queries[q["_id"]] = q["text"]
    rel = {}
    qrels = os.path.join(boolq_dir, "qrels.tsv")
    if not os.path.exists(qrels):
        qrels = os.path.join(boolq_dir, "qrels", "test.tsv")
    for i, l in enumerate(open(qrels, encoding="utf-8")):
        parts = l.rstrip("\n").split("\t")
        if i == 0 and not parts[-1].lstrip("-").isdigit():
            continue  # header
        if int(parts[2]) > 0:
            rel.setdefault(parts[0], set()).add(parts[1])
    qids = [q for q in rel if q in queries]
    m = load(system, model_dir, threads)
    docs = m.encode([(d.get("title") or "") + " " + d["text"] for d in corpus], batch_size=32,
                    normalize_embeddings=True, convert_to_numpy=True)
    qv = m.encode([queries[q] for q in qids], batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    ids = [d["_id"] for d in corpus]
    scores = qv @ docs.T
    top = np.argsort(-scores, axis=1)[:, :10]
    ndcg = r1 = mrr = 0.0
    for i, q in enumerate(qids):
        ranked = [ids[j] for j in top[i]]
        gains = [1.0 if d in rel[q] else 0.0 for d in ranked]
        dcg = sum(g / np.log2(k + 2) for k, g in enumerate(gains))
        ideal = sum(1.0 / np.log2(k + 2) for k in range(min(len(rel[q]), 10)))
        ndcg += dcg / ideal
        r1 += gains[0]
        mrr += next((1.0 / (k + 1) for k, g in enumerate(gains) if g), 0.0)
    n = len(qids)
    print(json.dumps({"system": system, "queries": n, "ndcg@10": ndcg / n, "recall@1": r1 / n, "mrr@10": mrr / n}))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    elif cmd == "embed":
        embed(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    elif cmd == "boolq":
        boolq(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        raise SystemExit(__doc__)
