#!/usr/bin/env python3
"""Time the embedded default end to end (`webtune run`, no overrides) and print what it achieved.

  python bench/default.py [--runs-dir /tmp/bench-default] [--repeat 1]

Target (issue 3): at most 3 minutes on a 2-core machine once set up; the tuned model beats the
base on domain test loss; the general loss change is reported.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def one_run(runs_dir: Path) -> dict:
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "webtune", "run", f"runs_dir={runs_dir}"], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"webtune run failed:\n{r.stderr[-3000:]}")
    run = max((p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    m = json.loads((run / "metrics.json").read_text())
    stages = {k: v["seconds"] for k, v in json.loads((run / "manifest.json").read_text())["stages"].items()}
    return {"wall": wall, "run": run, "metrics": m, "stages": stages}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    runs_dir = a.runs_dir or Path(tempfile.mkdtemp(prefix="bench-default-"))
    console = Console()
    results = []
    for _ in range(a.repeat):
        # a fresh runs_dir each time, so no stage comes from the cache
        results.append(one_run(runs_dir / f"r{len(results)}"))
    t = Table(title=f"webtune run (embedded default), {os.cpu_count()} cores")
    for col in ("run", "wall s", "stages (s)", "domain loss base -> tuned", "general loss base -> tuned",
                "general share (target)", "packing eff."):
        t.add_column(col)
    for i, r in enumerate(results):
        ev, mix = r["metrics"]["eval"], r["metrics"]["mix"]
        t.add_row(str(i + 1), f"{r['wall']:.1f}", " ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()),
                  f"{ev['base']['domain']['loss']:.3f} -> {ev['tuned']['domain']['loss']:.3f} (gain {ev['domain_gain']:.3f})",
                  f"{ev['base']['general']['loss']:.3f} -> {ev['tuned']['general']['loss']:.3f} ({ev['general_change']:+.3f})",
                  f"{mix['mix']['realised_general_share']:.3f} ({mix['mix']['target_general_share']})",
                  f"{mix['packing']['train']['efficiency']:.4f}")
    console.print(t)
    print(f"target: <= 180 s wall; {'PASS' if all(r['wall'] <= 180 for r in results) else 'FAIL'}")


if __name__ == "__main__":
    main()
