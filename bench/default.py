#!/usr/bin/env python3
"""Time the embedded default end to end (`webtune run`, no overrides) and print what it achieved.

  python bench/default.py [--runs-dir /tmp/bench-default] [--repeat 2] [--keep-scores] [-- OVERRIDES...]

Target (issue 15): SmolLM2-135M-Instruct fine-tuned (LoRA) in at most 5 minutes on an idle 2-core
machine once `webtune fetch-base` has run; the domain test loss and chrF gains are positive. The goal
is absolute, so next to the wall time it prints the CPU time of the run and the load average before
and after (on a busy machine, wall time says little about an idle one).

Each run gets a fresh runs_dir (no stage from the cache). The base model's scores are kept across
runs in the per-user cache ($WEBTUNE_CACHE/eval-scores/): the first run here starts without them
(that folder is emptied first, unless --keep-scores), as on a fresh machine; the later runs reuse
them, as every later run of the default does.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(runs_dir: Path, overrides: list[str]) -> dict:
    load_before, cpu_before = os.getloadavg(), cpu_seconds()
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "webtune", "run", f"runs_dir={runs_dir}", *overrides], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    cpu, load_after = cpu_seconds() - cpu_before, os.getloadavg()
    if r.returncode != 0:
        sys.exit(f"webtune run failed:\n{r.stderr[-3000:]}")
    run = max((p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime)
    m = json.loads((run / "metrics.json").read_text())
    stages = {k: v["seconds"] for k, v in json.loads((run / "manifest.json").read_text())["stages"].items()}
    base = "reused" if "base scores reused from" in (run / "run.log").read_text() else "scored"
    return {"wall": wall, "cpu": cpu, "load": (load_before[0], load_after[0]), "run": run, "metrics": m,
            "stages": stages, "base": base}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--keep-scores", action="store_true", help="keep the base's cached scores for run 1")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for `webtune run` (after --)")
    a = ap.parse_args()
    runs_dir = a.runs_dir or Path(tempfile.mkdtemp(prefix="bench-default-"))
    console = Console(width=max(220, shutil.get_terminal_size().columns))   # the table is wide: never fold it
    results = []
    if not a.keep_scores:
        from webtune.evaluate.stage import user_scores_dir
        shutil.rmtree(user_scores_dir(), ignore_errors=True)
    for _ in range(a.repeat):
        # a fresh runs_dir each time, so no stage comes from the cache
        results.append(one_run(runs_dir / f"r{len(results)}", a.overrides))
    t = Table(title=f"webtune run (embedded default), {os.cpu_count()} cores")
    for col in ("run", "base scores", "wall s", "CPU s", "load 1-min before/after", "stages (s)", "domain loss base -> tuned (n)",
                "general loss base -> tuned (n)", "chrF base -> tuned (n)", "ended with end-of-turn base/tuned"):
        t.add_column(col)
    for i, r in enumerate(results):
        ev = r["metrics"]["eval"]
        b, tu = ev["base"], ev["tuned"]
        t.add_row(str(i + 1), r["base"], f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['load'][0]:.2f} / {r['load'][1]:.2f}",
                  " ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()),
                  f"{b['domain']['loss']:.3f} -> {tu['domain']['loss']:.3f} (gain {ev['domain_gain']:.3f}; "
                  f"n={tu['domain']['examples']})",
                  f"{b['general']['loss']:.3f} -> {tu['general']['loss']:.3f} ({ev['general_change']:+.3f}; "
                  f"n={tu['general']['examples']})",
                  f"{b['generation']['chrF']} -> {tu['generation']['chrF']} (n={ev['n_generated']})",
                  f"{b['end_of_turn']['ended']}/{b['end_of_turn']['n']} / {tu['end_of_turn']['ended']}/{tu['end_of_turn']['n']}")
    console.print(t)
    print(f"target: <= 300 s wall on an idle 2-core machine; here {'PASS' if all(r['wall'] <= 300 for r in results) else 'OVER'}"
          f" at load average {max(r['load'][1] for r in results):.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
