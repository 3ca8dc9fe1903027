"""coltrast's Ray driver: one Ray task per embedding shard, each running `coltrast worker embed`.

coltrast (src/executor/ray.rs) writes a plan (JSON) and runs `python -m coltrast_ray PLAN.json`. The plan holds
the cluster address, the per-task resources, the retry count and, per shard, its id and the worker's argv.
The driver prints one JSON line per finished shard on stdout:

    {"shard": ID, "ok": true, "node": "127.0.0.1/3f2a9c1b", "attempt_s": ..., "load_s": ..., "embed_s": ...}
    {"shard": ID, "ok": false, "error": "one line: the Ray error"}

and exits 0 once every shard has a line. It knows nothing about embeddings: the worker reads the shard and
writes its output atomically, so a shard is done exactly when its output file exists.

Faults: a worker process killed mid-shard (Ray's worker or the coltrast child) is retried by Ray up to
`max_retries` times (system failures and non-zero exits alike). When coltrast dies, the driver's stdin closes;
the driver then cancels every task still running (force: their workers are killed) and exits, so nothing keeps
computing for a run that is gone. Finished shards stay on the shared dir for the rerun.
"""

from .driver import main

__all__ = ["main"]
