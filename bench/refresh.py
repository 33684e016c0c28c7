#!/usr/bin/env python3
"""Two refreshes in a row on the default domain (issue 30): v1 trained on part of the default's
products, then two newer snapshots from bench/gen/gen_refresh.py, each refreshed with `webtune
refresh shop`; prints the diff, the decision and the candidate-vs-promoted evidence on the new, old
and general sets, with wall and CPU time and the load.

  python bench/refresh.py [--work /tmp/bench-refresh] [--records 240] [-- OVERRIDES...]

The model is the default's (SmolLM2-135M-Instruct, LoRA); OVERRIDES apply to every run (a step
budget: model.train.max_steps=20).
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
PRODUCTS = ROOT / "src/webtune/examples/products.json"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def webtune(work: Path, *args: str) -> tuple[int, float, float, str]:
    cpu, start = cpu_seconds(), time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "webtune", *args], cwd=work, capture_output=True, text=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"})
    return r.returncode, time.perf_counter() - start, cpu_seconds() - cpu, r.stdout + r.stderr


def source(path: Path) -> list[str]:
    return ["source.name=shop", f"source.files.paths=[{path}]"]


def evidence_row(run: Path, measure: str) -> str:
    c = json.loads((run / "decision.json").read_text())["evidence"].get(measure)
    if not c or c.get("diff") is None:
        return "-"
    ci = f" [{c['low']:+.3f}, {c['high']:+.3f}]" if c.get("low") is not None else ""
    return f"{c['old']:.3f} → {c['new']:.3f}{ci} n={c['n']} {c['significant'] or ''}".strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-refresh"))
    ap.add_argument("--records", type=int, default=240)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True)
    records = [r for r in json.loads(PRODUCTS.read_text()) if isinstance(r, dict) and r.get("asin")
               and isinstance(r.get("description"), str)][:a.records]
    snaps = [a.work / "snap1.jsonl"]
    snaps[0].write_text("".join(json.dumps(r) + "\n" for r in records))
    for n, seed in ((2, 1), (3, 2)):
        snaps.append(a.work / f"snap{n}.jsonl")
        subprocess.run([sys.executable, str(ROOT / "bench/gen/gen_refresh.py"), "--old", str(snaps[-2]), "--pool",
                        str(PRODUCTS), "--out", str(snaps[-1]), "--labels", str(a.work / f"labels{n}.jsonl"),
                        "--new", "0.25", "--changed", "0.1", "--gone", "0.05", "--churn", "0.1", "--seed", str(seed)],
                       check=True)
    console = Console(width=200)
    load = os.getloadavg()[0]
    code, wall, cpu, out = webtune(a.work, "run", "source=files", *source(snaps[0]), "source.key_field=asin",
                                   *a.overrides)
    if code:
        sys.exit(out[-3000:])
    console.print(f"v1: {wall:.0f} s wall, {cpu:.0f} s CPU, load {load:.1f} → {os.getloadavg()[0]:.1f}")
    v1 = next(p for p in (a.work / "runs").iterdir() if p.name.endswith("shop_product_description"))
    for args in (("register", "shop", str(v1)), ("promote", "shop", "1", "--force")):
        webtune(a.work, "models", *args)
    table = Table(title="webtune refresh shop, twice (the default's products, SmolLM2-135M-Instruct LoRA)")
    for col in ("refresh", "diff (new/changed/same/gone)", "exit", "decision", "new set loss", "old set loss",
                "general loss", "unsupported values", "wall s", "CPU s", "load"):
        table.add_column(col)
    for n in (2, 3):
        load = os.getloadavg()[0]
        code, wall, cpu, out = webtune(a.work, "refresh", "shop", *source(snaps[n - 1]), *a.overrides)
        if code not in (0, 3):
            sys.exit(out[-3000:])
        run = sorted((a.work / "runs").glob("*_refresh"))[-1]
        outcome = json.loads((run / "promotion.json").read_text())
        d = outcome["diff"]
        table.add_row(f"{n - 1} (snap{n})", f"{d['new']}/{d['changed']}/{d['same']}/{d['gone']}", str(code),
                      f"{outcome['decided']}{' → ' + outcome['candidate'] if outcome['promoted'] else ''}",
                      evidence_row(run, "domain_loss"), evidence_row(run, "old_loss"),
                      evidence_row(run, "general_loss"), evidence_row(run, "unsupported_values"),
                      f"{wall:.0f}", f"{cpu:.0f}", f"{load:.1f} → {os.getloadavg()[0]:.1f}")
        console.print("; ".join(outcome["reasons"]))
    console.print(table)


if __name__ == "__main__":
    main()
