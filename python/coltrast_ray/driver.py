"""See the package docstring."""

import json
import os
import subprocess
import sys
import threading
import time

import ray


def _one_line(err):
    """The most specific line of a Ray error: the cause of a task error, else its last non-empty line."""
    cause = getattr(err, "cause", None)
    text = str(cause if cause is not None else err)
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    name = type(cause if cause is not None else err).__name__
    return f"{name}: {lines[-1]}" if lines else name


@ray.remote
def embed_shard(shard_id, argv, env):
    """Run `coltrast worker embed` on one shard; its last stdout line is a JSON object of timings."""
    start = time.time()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    if proc.returncode != 0:
        tail = [l for l in proc.stderr.splitlines() if l.strip()]
        why = tail[-1] if tail else f"exit status {proc.returncode}"
        raise RuntimeError(f"coltrast worker embed (shard {shard_id}) exited with {proc.returncode}: {why}")
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    stats = json.loads(lines[-1]) if lines else {}
    ctx = ray.get_runtime_context()
    node = f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"
    return {"node": node, "attempt_s": time.time() - start, **stats}


def _emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def main(argv):
    if len(argv) != 1:
        print("usage: python -m coltrast_ray PLAN.json", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        plan = json.load(f)
    ray.init(address=plan["address"], logging_level="WARNING", log_to_driver=False)
    opts = {
        "num_cpus": plan["num_cpus"],
        "num_gpus": plan["num_gpus"],
        "max_retries": plan["max_retries"],
        "retry_exceptions": True,
        "scheduling_strategy": "SPREAD",
    }
    submitted = time.time()
    refs = {embed_shard.options(**opts).remote(s["id"], s["argv"], plan.get("env", {})): s["id"] for s in plan["shards"]}

    def watch_parent():
        # coltrast holds our stdin open; EOF means it is gone: stop every task and leave.
        sys.stdin.read()
        for r in list(refs):
            try:
                ray.cancel(r, force=True)
            except Exception:
                pass
        os._exit(3)

    threading.Thread(target=watch_parent, daemon=True).start()
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for r in done:
            sid = refs[r]
            try:
                out = ray.get(r)
                _emit({"shard": sid, "ok": True, "since_submit_s": time.time() - submitted, **out})
            except Exception as e:  # a shard that failed for good: after Ray's retries
                _emit({"shard": sid, "ok": False, "error": _one_line(e)})
    return 0
