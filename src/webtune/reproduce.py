"""`webtune reproduce RUN`: rerun RUN/config.yaml (never conf/) into a new directory and compare.

Checks the inputs first (a new snapshot or an edited file is said plainly), then the data
hashes stage by stage, then the metrics.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from rich.table import Table

from .commands import attach_run_log, execute, load_run_config
from .console import console, log
from .rundir import hash_path, new_run_dir, read_json
from .runner import _link_tree
from .stages import SOURCES_JSON, SPLITS

DATA = ["data/examples.jsonl"] + SPLITS + ["data/packed", "ledger.jsonl"]
METRICS = [("domain loss (tuned)", ("tuned", "domain", "loss")), ("general loss (tuned)", ("tuned", "general", "loss")),
           ("domain loss (base)", ("base", "domain", "loss"))]


def reproduce(original: Path) -> int:
    cfg = load_run_config(original)
    new = new_run_dir(cfg.runs_dir, cfg.name)
    shutil.copy2(original / "config.yaml", new / "config.yaml")
    if (original / ".hydra").is_dir():
        shutil.copytree(original / ".hydra", new / ".hydra")
    raw = original / "data/raw"
    if raw.is_dir():  # what a snapshot or crawl delivered: reuse it, never fetch or trigger again
        for src in raw.iterdir():
            if src.is_dir():
                _link_tree(src, new / "data/raw" / src.name)
    attach_run_log(new)
    log(f"reproducing {original} -> {new}")
    execute(cfg, new, fresh=False, only={"source"})
    changed = compare_inputs(original, new)
    if changed:
        log("[yellow]the source data changed since the original run[/yellow]; results will differ:")
        for line in changed:
            log(f"  {line}")
    execute(cfg, new, fresh=False)
    same = compare_outputs(original, new)
    return 0 if same and not changed else 1


def compare_inputs(original: Path, new: Path) -> list[str]:
    old = read_json(original / SOURCES_JSON, {}) or {}
    cur = read_json(new / SOURCES_JSON, {}) or {}
    changes = []
    for side, info in old.items():
        now = cur.get(side, {}).get("sha256", {})
        for path, digest in info.get("sha256", {}).items():
            if path not in now:
                changes.append(f"{side} input {path} is gone")
            elif now[path] != digest:
                changes.append(f"{side} input {path} changed (sha256 {digest[:12]} -> {now[path][:12]})")
        for path in set(now) - set(info.get("sha256", {})):
            changes.append(f"{side} input {path} is new")
    return changes


def compare_outputs(original: Path, new: Path) -> bool:
    table = Table(title="reproduce: original vs new")
    for col in ("what", "original", "new", "same"):
        table.add_column(col)
    all_same = True
    for rel in DATA:
        a = hash_path(original / rel)[:12] if (original / rel).exists() else "-"
        b = hash_path(new / rel)[:12] if (new / rel).exists() else "-"
        all_same &= a == b
        table.add_row(rel, a, b, "yes" if a == b else "[red]NO[/red]")
    ma = read_json(original / "eval/metrics.json", {}) or {}
    mb = read_json(new / "eval/metrics.json", {}) or {}
    for name, path in METRICS:
        va, vb = _get(ma, path), _get(mb, path)
        table.add_row(name, str(va), str(vb), "yes" if va == vb else "differs")
    console.print(table)
    log("[green]data hashes identical[/green]" if all_same else "[red]data hashes differ[/red]")
    return all_same


def _get(d: dict, path: tuple):
    for p in path:
        d = d.get(p, {}) if isinstance(d, dict) else {}
    return d if d != {} else None
