"""Sweep benchmark (issue 11): a 3-point learning-rate sweep on the default, with the stage cache and without.

  python bench/sweep.py                                  # the default (minutes on 2 cores)
  python bench/sweep.py --lrs 1e-3,3e-4 --extra model.train.max_steps=4 mix.max_seq_len=256   # quick look

with cache:    one `webtune run -m model.train.learning_rate=A,B,C` in a fresh runs_dir: the first job
               prepares, mixes and packs; the others restore those stages from runs/.cache/ by hard links.
without cache: one `webtune run model.train.learning_rate=X` per point, each in its own fresh runs_dir,
               so nothing can be reused (the runner has no switch to turn reuse off).

Proof that prepare ran once: the jobs' run.log lines `prepare: running` and their manifests' `cached`
flags. Wall time per job comes from its run.log (first to last line); the totals are the commands'.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "mix", "train", "evaluate"]


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def webtune(args: list[str], log: Path) -> tuple[float, float]:
    """Run the real CLI; return its wall time and CPU time (user + system: less sensitive than wall
    time to other work on the machine). Output goes to a file, to keep the table readable."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    start, cpu = time.perf_counter(), cpu_of_children()
    with open(log, "w") as fh:
        rc = subprocess.run([sys.executable, "-m", "webtune", *args], cwd=REPO, env=env, stdout=fh, stderr=fh).returncode
    seconds = time.perf_counter() - start
    if rc != 0:
        sys.exit(f"webtune {' '.join(args)} failed (rc {rc}); see {log}")
    return seconds, cpu_of_children() - cpu


def log_span(run_log: Path) -> float:
    """Seconds from the first to the last timestamped line of a run.log."""
    stamps = []
    for line in run_log.read_text().splitlines():
        if line.startswith("[") and "]" in line:
            try:
                stamps.append(dt.datetime.strptime(line[1:line.index("]")], "%Y-%m-%d %H:%M:%S,%f"))
            except ValueError:
                pass
    return (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else float("nan")


def describe(run_dir: Path) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())["stages"]
    text = (run_dir / "run.log").read_text()
    cfg_lr = next(line.split(":", 1)[1].strip() for line in (run_dir / "config.yaml").read_text().splitlines()
                  if line.strip().startswith("learning_rate:"))
    return {"run": run_dir.name, "lr": cfg_lr, "wall_s": log_span(run_dir / "run.log"),
            "prepare_running": text.count("prepare: running"),
            "stages": {s: {"cached": manifest[s].get("cached", False), "seconds": manifest[s].get("seconds")}
                       for s in STAGES if s in manifest}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lrs", default="1e-3,3e-4,1e-4", help="comma-separated learning rates")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    ap.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    lrs = a.lrs.split(",")
    work = a.work or Path(tempfile.mkdtemp(prefix="webtune-sweep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    console = Console(width=140)
    console.print(f"work dir: {work}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    console.print(f"with cache: webtune run -m model.train.learning_rate={a.lrs} ...")
    cached_runs = work / "cached"
    cached_total, cached_cpu = webtune(["run", "-m", f"model.train.learning_rate={a.lrs}", f"runs_dir={cached_runs}", *a.extra],
                           work / "cached.out")
    sweep = next((cached_runs / "sweeps").iterdir())
    with_cache = [describe(p) for p in sorted(sweep.iterdir(), key=lambda p: p.name) if (p / "manifest.json").exists()]

    without_cache, plain_total, plain_cpu = [], 0.0, 0.0
    for i, lr in enumerate(lrs):
        console.print(f"without cache: webtune run model.train.learning_rate={lr} (fresh runs_dir)")
        runs = work / f"plain{i}"
        wall, cpu = webtune(["run", f"model.train.learning_rate={lr}", f"runs_dir={runs}", *a.extra],
                            work / f"plain{i}.out")
        plain_total, plain_cpu = plain_total + wall, plain_cpu + cpu
        run_dir = next(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "registry")
        without_cache.append(describe(run_dir))

    table = Table(title=f"{len(lrs)}-point learning-rate sweep on the default"
                        + (f" ({' '.join(a.extra)})" if a.extra else ""))
    for col in ("mode", "job", "lr", "job wall s", "prepare", "mix", "train s", "evaluate s", "`prepare: running`"):
        table.add_column(col, justify="right" if col.endswith("s") else "left")

    def row(mode, i, r):
        st = r["stages"]
        how = lambda s: "cached" if st[s]["cached"] else f"ran {st[s]['seconds']:.1f}s"  # noqa: E731
        table.add_row(mode, str(i), r["lr"], f"{r['wall_s']:.1f}", how("prepare"), how("mix"),
                      f"{st['train']['seconds']:.1f}", f"{st['evaluate']['seconds']:.1f}", str(r["prepare_running"]))

    for i, r in enumerate(with_cache):
        row("with cache", i, r)
    for i, r in enumerate(without_cache):
        row("without cache", i, r)
    console.print(table)

    prepared = {"with": sum(r["prepare_running"] for r in with_cache),
                "without": sum(r["prepare_running"] for r in without_cache)}
    jobs = {"with": sum(r["wall_s"] for r in with_cache), "without": sum(r["wall_s"] for r in without_cache)}
    totals = Table(title="totals")
    for col in ("", "with cache", "without cache", "without / with"):
        totals.add_column(col, justify="right")
    totals.add_row("command wall s (1 sweep vs 3 runs)", f"{cached_total:.1f}", f"{plain_total:.1f}",
                   f"{plain_total / cached_total:.2f}x")
    totals.add_row("command CPU s (user + system)", f"{cached_cpu:.1f}", f"{plain_cpu:.1f}",
                   f"{plain_cpu / cached_cpu:.2f}x")
    totals.add_row("sum of job wall s (run.log)", f"{jobs['with']:.1f}", f"{jobs['without']:.1f}",
                   f"{jobs['without'] / jobs['with']:.2f}x")
    first = with_cache[0]["wall_s"]
    later = [r["wall_s"] for r in with_cache[1:]]
    totals.add_row("times prepare ran", str(prepared["with"]), str(prepared["without"]), "")
    console.print(totals)
    console.print(f"with cache: first job {first:.1f}s, later jobs {', '.join(f'{x:.1f}s' for x in later)} "
                  f"(prepare+mix+pack restored by hard links); {platform.processor() or platform.machine()}, "
                  f"{os.cpu_count()} cores, load average now {os.getloadavg()[0]:.1f}")
    if a.json:
        a.json.write_text(json.dumps({"lrs": lrs, "extra": a.extra, "with_cache": with_cache,
                                      "without_cache": without_cache, "cached_total_s": cached_total,
                                      "plain_total_s": plain_total, "cached_cpu_s": cached_cpu,
                                      "plain_cpu_s": plain_cpu, "prepare_runs": prepared}, indent=2))


if __name__ == "__main__":
    main()
