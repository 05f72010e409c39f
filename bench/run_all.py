"""Run every benchmark in sequence, then print their one-line JSON summaries together.

    .venv/bin/python bench/run_all.py [--quick]

Exits non-zero if a benchmark fails to run (a missed target is reported, not a failure).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    "bench_create.py",
    "bench_list.py",
    "bench_watch.py",
    "bench_rss.py",
    "bench_schedule.py",
    "bench_deployment.py",
    "bench_hollow.py",
    "bench_pods.py",
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    a = p.parse_args()
    summaries: list[str] = []
    failed: list[str] = []
    t0 = time.monotonic()
    for name in BENCHES:
        cmd = [sys.executable, str(HERE / name), *(["--quick"] if a.quick else [])]
        print(f"\n### {' '.join(cmd[1:])}", flush=True)
        start = time.monotonic()
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        sys.stdout.write(res.stdout)
        print(f"(took {time.monotonic() - start:.1f} s)", flush=True)
        if res.returncode != 0:
            failed.append(name)
            continue
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if lines:
            summaries.append(lines[-1])
    print(f"\n### summaries ({time.monotonic() - t0:.0f} s total)")
    for s in summaries:
        print(s)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
