"""No-op rerun cost: a second `make pipeline` (and `coltrast run` alone) when every stage is cached.

Runs the pipeline once to make sure it is cached, then times N repeats of each command and prints medians.
The baseline in the same run is the cost of starting the binary at all (`coltrast --version`), so the
ratio shows what fingerprinting and manifest checks add on top of process start-up.
Also one `coltrast ask` as a whole process (load model, index and metadata, answer), against the same
command in coltrast-torch, which links libtorch as the single binary did before the split.
Usage: python3 bench/noop.py N
"""
import os
import statistics
import subprocess
import sys
import time

n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
binary = os.environ["BIN"]
torch_binary = os.path.join(os.path.dirname(binary), "coltrast-torch")
question = "What AI model is used for medical diagnosis?"


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


subprocess.run(["make", "-s", "pipeline"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
out = subprocess.run([binary, "run"], check=True, capture_output=True, text=True).stderr
assert " ran " not in out, "pipeline was not fully cached:\n" + out

rows = []
for name, cmd in [
    ("coltrast --version (process start baseline)", [binary, "--version"]),
    ("coltrast run (all cached)", [binary, "run"]),
    ("make pipeline (all cached)", ["make", "-s", "pipeline"]),
    ("coltrast-torch --version (libtorch linked)", [torch_binary, "--version"]),
    ("coltrast ask (one process, cold)", [binary, "ask", question]),
    ("coltrast-torch ask (libtorch linked)", [torch_binary, "ask", question]),
]:
    ts = sorted(timed(cmd) for _ in range(n))
    rows.append((name, statistics.median(ts), ts[int(0.9 * (n - 1))]))

base = rows[0][1]
print(f"## No-op rerun ({n} repeats each, {os.cpu_count()} cores)\n")
print("| command | median | p90 | vs start-up |")
print("|---|---|---|---|")
for name, med, p90 in rows:
    print(f"| {name} | {med*1000:.1f} ms | {p90*1000:.1f} ms | {med/base:.2f}x |")
print(f"\ngoal: make pipeline (all cached) <= 300 ms -> {'met' if rows[2][1] <= 0.3 else 'NOT met'}")
