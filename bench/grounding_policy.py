#!/usr/bin/env python3
"""prepare.grounding=trim against =off on the default, side by side in one evaluation (issue 27).

  python bench/grounding_policy.py [--runs-dir /tmp/bench-policy] [--generations 100] [--train-seed 0] [-- OVERRIDES...]

1. `webtune run prepare.grounding=off name=policy_off auto_register=true`, then `models promote policy_off 1`.
2. `webtune run` (the shipped policy, trim) with `eval.compare_to=policy_off`: base, the trim model and
   the off model (the promoted version) generate on the same held-out prompts of the trim run, and
   every answer is checked by one detector with one vocabulary (the trim run's). Both models trained
   on the same records (the split is by record), so neither saw those prompts.
Prints each model's unsupported-value and unsupported-attribute rates with n, the paired intervals
(trim vs base, trim vs off; McNemar's p for the rates), the domain loss and chrF, and three answers of
each model with their unsupported spans in [brackets].

chrF and loss are against the trim run's references, which `trim` rewrote: they favour the trim model a
little (the off model still writes the warranty sentences the references lost); the grounding rates do
not use references and are the measure that matters here.
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
console = Console(highlight=False)


def webtune(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "webtune", *args], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0:
        sys.exit(f"webtune {' '.join(args)} failed:\n{r.stderr[-3000:]}")


def newest_run(runs: Path, name: str) -> Path:
    return max(runs.glob(f"*_{name}"), key=lambda p: p.stat().st_mtime)


def pct(x) -> str:
    return "–" if x is None else f"{100 * x:+.0f}"


def highlighted(text: str, spans: list) -> str:
    """The answer with its unsupported spans in [brackets] (values) or {braces} (attributes)."""
    out, at = [], 0
    for s in sorted(spans, key=lambda s: s["start"]):
        out += [text[at:s["start"]], ("[" if s["kind"] == "value" else "{") + text[s["start"]:s["end"]]
                + ("]" if s["kind"] == "value" else "}")]
        at = s["end"]
    return "".join(out + [text[at:]])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--generations", type=int, default=100, help="held-out prompts generated (all, if fewer)")
    ap.add_argument("--train-seed", type=int, default=0, help="model.train.seed of both models (the split stays)")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    runs = a.runs_dir or Path(tempfile.mkdtemp(prefix="bench-policy-"))
    common = [f"runs_dir={runs}", f"eval.generation_examples={a.generations}", f"model.train.seed={a.train_seed}",
              *a.overrides]
    off, trim = (f"policy_{p}" + (f"_s{a.train_seed}" if a.train_seed else "") for p in ("off", "trim"))
    load0, t0 = os.getloadavg()[0], time.perf_counter()

    if not list(runs.glob(f"*_{off}")):
        webtune("run", *common, "prepare.grounding=off", f"name={off}", "registry.auto_register=true")
        webtune("models", "--registry", str(runs / "registry"), "promote", off, "1", "--force")
    webtune("run", *common, f"name={trim}", f"eval.compare_to={off}")
    run = newest_run(runs, trim)
    m = json.loads((run / "eval/metrics.json").read_text())
    wall, load1 = time.perf_counter() - t0, os.getloadavg()[0]

    labels = {"base": "base", "tuned": "trim", "promoted": "off"}
    t = Table(title=f"prepare.grounding: trim vs off, on {m['n_generated']} held-out prompts of {run.name}")
    t.add_column("model")
    for c in ("unsupported value", "unsupported attribute", "domain loss", "chrF", "ended turn"):
        t.add_column(c, justify="right")
    for label, shown in labels.items():
        r, g = m[label], m[label].get("grounding", {})
        rate = lambda k: f"{round(g[k]['rate'] * g[k]['n'])}/{g[k]['n']}" if k in g else "–"
        t.add_row(shown, rate("unsupported_values"), rate("unsupported_attributes"), f"{r['domain']['loss']:.3f}",
                  f"{r['generation']['chrF']:.1f}", f"{r['end_of_turn']['ended']}/{r['end_of_turn']['n']}")
    console.print(t)

    d = Table(title="paired differences, trim minus the other (rates in points; 95% interval; McNemar p)")
    for c in ("measure", "vs base", "vs off"):
        d.add_column(c)
    for measure in ("unsupported_values", "unsupported_attributes", "domain_loss", "chrF", "parent_f"):
        cells = []
        for other in ("base", "promoted"):
            c = m["evidence"].get(f"tuned_vs_{other}", {}).get(measure)
            if not c or c["diff"] is None:
                cells.append("–")
                continue
            scale = 100 if c["kind"] == "binary" else 1
            p = f", p={c['p']:.3g}" if "p" in c else ""
            cells.append(f"{scale * c['diff']:+.3g} ({scale * c['low']:+.3g} to {scale * c['high']:+.3g}){p}, "
                         f"n={c['n']}, {c['significant'] or 'no significant difference'}")
        d.add_row(measure, *cells)
    console.print(d)
    console.print(f"verdict: {m['status']}; wall {wall:.0f} s, load {load0:.2f} -> {load1:.2f}; run {run}")

    rows = [json.loads(x) for x in (run / "eval/generations.jsonl").read_text().splitlines()]
    for label, shown in labels.items():
        flagged = [r for r in rows if (r.get(f"{label}_grounding") or {}).get("spans")]
        console.print(f"\n[bold]{shown}[/]: {len(flagged)} of {len(rows)} answers with unsupported spans; three of them:")
        for r in flagged[:3]:
            console.print(f"- {highlighted(r[label], r[f'{label}_grounding']['spans'])[:400]}")


if __name__ == "__main__":
    main()
