"""Issue 3 measurements that choose defaults: chunk.compare ("previous" vs "centroid") and mine.query_template.

For each configuration, runs ingest → chunk → mine and reads mine's base-model retrieval statistics from its
manifest: document-level MRR and R@1 (a document ranks at its best chunk) and, for pairs whose positive is a
chunk, the MRR of that chunk among all chunks. Runs on the sample dataset and on BoolQ.
Usage: python3 bench/chunking.py   (env: BIN, BOOLQ)
"""
import json
import os
import subprocess
import tempfile

BIN, BOOLQ = os.environ["BIN"], os.environ["BOOLQ"]
SAMPLE = os.path.abspath("data/ai_projects_dataset.json")
proj = tempfile.mkdtemp(prefix="coltrast-chunking-")


def stats(dataset, sets):
    with open(os.path.join(proj, "pipeline.toml"), "w") as f:
        f.write(f'[ingest]\npath = "{dataset}"\n')
    args = [x for s in sets for x in ("--set", s)]
    subprocess.run([BIN, "run", "mine", *args], cwd=proj, check=True, capture_output=True)
    out = {}
    for stage in ("chunk", "mine"):
        text = subprocess.run([BIN, "show", stage, *args], cwd=proj, check=True, capture_output=True, text=True).stdout
        out[stage] = json.loads(text[text.index("manifest:\n") + len("manifest:\n"):])["stats"]
    return out


def row(name, st):
    m = st["mine"]
    return (f"| {name} | {st['chunk']['chunks']} | {m.get('base_query_top1_project', 0):.3f} | "
            f"{m.get('base_query_mrr_project', 0):.3f} | {m.get('base_query_mrr_positive_chunk', float('nan')):.3f} |")


print("## chunk.compare and mine.query_template (base model, threshold 0.7)\n")
print("| dataset / setting | chunks | doc R@1 | doc MRR | positive-chunk MRR |")
print("|---|---|---|---|---|")
datasets = [("sample", SAMPLE)] + ([("BoolQ", BOOLQ)] if os.path.isdir(BOOLQ) else [])
for dname, path in datasets:
    for compare in ("previous", "centroid"):
        print(row(f"{dname}, compare={compare}", stats(path, [f"chunk.compare={compare}"])), flush=True)
    if dname == "sample":
        print(row("sample, template \"{title}: {question}\"", stats(path, ["mine.query_template={title}: {question}"])), flush=True)
