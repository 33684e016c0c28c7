"""`webtune reproduce RUN [--data-only]`: recompute RUN from its own config and raw data, and compare.

RUN/config.yaml is loaded verbatim (never conf/) and RUN/data/raw/ is copied (fresh files, no hard
links) into a new run directory; every deterministic stage after the source runs there with the
stage cache and the per-user caches off, so nothing is restored and nothing is compared with
itself. The teacher's replies are inputs too: the scratch teacher cache is seeded from the run's
record of the replies it used (data/teacher_replies.jsonl, checked against the manifest), so nothing
is asked even where runs/.cache/teacher/ is gone. Then every data file (examples, splits, packed
rows, mix plan, ledger events and ledger) is compared byte for byte and the ones that differ are
named; with training, the metric deltas are reported. The original run is only read: its files' hashes are taken before and after, and a change
is reported as an error.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from rich.table import Table

from .hydra_setup import load_run_config
from .rundir import MANIFEST, attach_run_log, caches_off, new_run_dir
from .console import console, log
from .errors import WebtuneError
from .fileio import copy_tree, hash_path, read_json
from .stages import SOURCES_JSON, TEACHER_REPLIES

DATA_STAGES = ["prepare", "mix", "ledger"]
COMPARED = ["data", "ledger", "ledger.jsonl"]     # every file under these, except data/raw
METRICS = [("domain loss (tuned)", ("tuned", "domain", "loss")), ("general loss (tuned)", ("tuned", "general", "loss")),
           ("domain loss (base)", ("base", "domain", "loss")), ("general loss (base)", ("base", "general", "loss"))]


def reproduce(run_dir: Path, data_only: bool = False) -> int:
    """0 when every data file (and, with training, every metric) is identical; 1 otherwise."""
    original = Path(run_dir)
    cfg = load_run_config(original)
    before = file_hashes(original)
    new = _prepare_copy(original, cfg)
    log(f"reproducing {original} -> {new} (stage cache off{', data stages only' if data_only else ''})")
    replies, replies_changed = recorded_replies(original)
    edited = raw_changes(new) + replies_changed
    for line in edited:
        log(f"[yellow]{line}[/yellow]")
    _run(cfg, new, data_only, replies)
    differ = compare_data(original, new)
    same_metrics = data_only or compare_metrics(original, new)
    if file_hashes(original) != before:
        raise WebtuneError(f"reproduce changed files of the original run {original}: this is a bug, please report it")
    log(f"original run {original}: unchanged ({len(before)} files, hashes before and after identical)")
    return 0 if not differ and not edited and same_metrics else 1


def _prepare_copy(original: Path, cfg) -> Path:
    new = new_run_dir(cfg.runs_dir, f"{cfg.name}_reproduce")
    shutil.copyfile(original / "config.yaml", new / "config.yaml")
    for part in (".hydra", "data/raw"):
        if (original / part).is_dir():
            copy_tree(original / part, new / part)  # fresh files: the new run never shares an inode
    if not (new / SOURCES_JSON).exists():
        raise WebtuneError(f"{original / SOURCES_JSON} not found: the run has no raw data to reproduce from "
                           f"(was it made before source snapshots were kept?)")
    attach_run_log(new)
    return new


def _run(cfg, new: Path, data_only: bool, replies: Path | None = None) -> None:
    """The stages after the source, cache off. `runs_dir` (read by stages only for caches of their
    own, never in a key) points at an empty scratch folder and the per-user caches (the base model's
    scores) are off, so no stage finds anything to reuse; only the teacher's cache there holds the
    run's recorded `replies`, its inputs."""
    from omegaconf import OmegaConf

    from .runner import Runner
    from .stages import build_stages
    stages = build_stages()
    wanted = {s.name for s in stages if s.name != "source" and (not data_only or s.name in DATA_STAGES)}
    wanted.discard("register")
    with tempfile.TemporaryDirectory(prefix="webtune-reproduce-") as scratch, caches_off():
        fresh = OmegaConf.merge(cfg, {"runs_dir": scratch})
        if replies is not None:
            from .teacher.cache import ReplyCache, cache_root, seed_from_record
            n = seed_from_record(replies, ReplyCache(cache_root(scratch)))
            log(f"teacher: {n} replies recorded by the run ({TEACHER_REPLIES}), none asked again")
        Runner(fresh, new, stages, console, log, use_cache=False).run(only=wanted)


def file_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hash_path(p) for p in sorted(root.rglob("*")) if p.is_file()}


def raw_changes(run_dir: Path) -> list[str]:
    """The raw files whose bytes are not those sources.json recorded when the source delivered them."""
    found = read_json(run_dir / SOURCES_JSON, {}) or {}
    changes = []
    for side, info in found.items():
        for rel, digest in info.get("sha256", {}).items():
            path = run_dir / rel
            if not path.exists():
                changes.append(f"{side} raw input {rel} is missing")
            elif hash_path(path) != digest:
                changes.append(f"{side} raw input {rel} changed since the run (sha256 {digest[:12]} -> "
                               f"{hash_path(path)[:12]})")
    return changes


def recorded_replies(original: Path) -> tuple[Path | None, list[str]]:
    """The run's record of the teacher replies it used (None: it has none), and what changed in it
    since the run, against the hash its manifest keeps for the prepare stage's output."""
    path = original / TEACHER_REPLIES
    prepare = ((read_json(original / MANIFEST, {}) or {}).get("stages") or {}).get("prepare") or {}
    digest = (prepare.get("outputs") or {}).get(TEACHER_REPLIES)
    if not path.exists():
        return None, [f"teacher replies {TEACHER_REPLIES} are missing: the teacher is asked again"] if digest else []
    if digest and hash_path(path) != digest:
        return path, [f"teacher replies {TEACHER_REPLIES} changed since the run (sha256 {digest[:12]} -> "
                      f"{hash_path(path)[:12]})"]
    return path, []


def data_files(run_dir: Path) -> dict[str, str]:
    out = {}
    for part in COMPARED:
        root = run_dir / part
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        for f in files:
            rel = f.relative_to(run_dir).as_posix()
            if not rel.startswith("data/raw/"):
                out[rel] = hash_path(f)
    return out


def compare_data(original: Path, new: Path) -> list[str]:
    """The data files that differ (or exist on one side only), printed; [] when all are identical."""
    a, b = data_files(original), data_files(new)
    differ = sorted(rel for rel in set(a) | set(b) if a.get(rel) != b.get(rel))
    if differ:
        table = Table(title="reproduce: data files that differ")
        for col in ("file", "original", "reproduced"):
            table.add_column(col)
        for rel in differ:
            table.add_row(rel, a.get(rel, "-")[:12], b.get(rel, "-")[:12])
        console.print(table)
        log(f"[red]{len(differ)} of {len(set(a) | set(b))} data files differ[/red]")
    else:
        log(f"[green]all {len(a)} data files identical[/green] (examples, splits, packed, ledger)")
    return differ


def compare_metrics(original: Path, new: Path) -> bool:
    ma = read_json(original / "eval/metrics.json", {}) or {}
    mb = read_json(new / "eval/metrics.json", {}) or {}
    table = Table(title="reproduce: metrics")
    for col in ("metric", "original", "reproduced", "delta"):
        table.add_column(col)
    same = True
    for name, path in METRICS:
        va, vb = _get(ma, path), _get(mb, path)
        if va is None and vb is None:
            continue
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        same &= va == vb
        table.add_row(name, str(va), str(vb), f"{delta:+.6g}" if delta is not None else "-")
    console.print(table)
    log("[green]metrics identical[/green]" if same else
        "[yellow]metrics differ: training is not bit-reproducible here (see the deltas)[/yellow]")
    return same


def _get(d: dict, path: tuple):
    for p in path:
        d = d.get(p, {}) if isinstance(d, dict) else {}
    return d if d != {} else None
