"""Content-addressed source snapshots: a source is acquired (and paid for) once.

What a source delivers (a Bright Data snapshot, a crawl, a dataset's rows, a copy of local files)
lives once under `runs/.cache/source/<key>/data/`, where the key is the hash of the source's
identity (`sources.identity`: what changes the request, never the source name). Each run gets hard
links of those files in `data/raw/<source name>/`; sweep points, reruns, resumes and previews with
the same identity reuse the entry. An exclusive file lock (`<key>.lock`) guards an entry, so parallel
sweep launchers acquire once: the first fills it, the others wait and link.

An entry is complete when `.complete` exists: the paths acquire returned, the source root (for ids
relative to it) and every file's size, mtime and sha256. Entry files are read-only (a run's hard link
must not edit the cache in place). A missing or damaged file makes the entry incomplete again: only
the bad files are removed and acquire runs again in the same folder, so a source's own state (a
Bright Data snapshot id) survives and the known snapshot is downloaded again, never re-triggered.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import importlib
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..console import console as _console, log
from ..errors import WebtuneError
from ..fileio import link_or_copy, sha256_file, sha256_text, write_json

CACHE = Path(".cache") / "source"
COMPLETE = ".complete"
IDENTITY = "identity.json"


@dataclass
class Snapshot:
    key: str
    dir: Path                 # the cache entry
    paths: list[Path]         # what acquire returned, inside dir/data
    root: Path | None         # the copy of the source root ids are relative to (files), or None


def cache_root(runs_dir) -> Path:
    return Path(runs_dir) / CACHE


def key_of(src) -> tuple[str, dict]:
    from . import identity
    ident = identity(src)
    return sha256_text(json.dumps(ident, sort_keys=True, default=str))[:32], ident


def is_cached(src, runs_dir) -> bool:
    """Whether a complete entry for this source config exists (read-only: nothing is repaired)."""
    return _read_meta(cache_root(runs_dir) / key_of(src)[0]) is not None


def acquire_cached(src, runs_dir, allow_paid: bool = True, console=None) -> Snapshot:
    """The snapshot for this source config: reused when cached, else acquired once under the lock."""
    key, ident = key_of(src)
    entry = cache_root(runs_dir) / key
    with locked(entry):
        meta = _valid(entry) or _covering(src, runs_dir, ident)
        if meta is None:
            meta = _fill(src, entry, ident, allow_paid, console)
        else:
            log(f"  source {src.name!r}: cached snapshot {meta['key'][:12]} (runs/.cache/source), no request made")
    return _snapshot(Path(meta["dir"]), meta)


def link_into(snap: Snapshot, raw_dir: Path) -> tuple[list[Path], Path | None]:
    """Hard-link the entry's files into raw_dir (replacing what is there); the paths and root there."""
    raw_dir = Path(raw_dir)
    if raw_dir.exists():
        shutil.rmtree(raw_dir)
    data = snap.dir / "data"
    for f in sorted(p for p in data.rglob("*") if p.is_file()):
        link_or_copy(f, raw_dir / f.relative_to(data))
    paths = [raw_dir / p.relative_to(data) for p in snap.paths]
    return paths, (raw_dir / snap.root.relative_to(data) if snap.root is not None else None)


@contextmanager
def locked(entry: Path):
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------- entries
def _snapshot(entry: Path, meta: dict) -> Snapshot:
    data = entry / "data"
    root = data / meta["root"] if meta.get("root") is not None else None
    return Snapshot(meta["key"], entry, [data / p for p in meta["paths"]], root)


def _read_meta(entry: Path) -> dict | None:
    try:
        meta = json.loads((entry / COMPLETE).read_text())
    except (OSError, ValueError):
        return None
    meta["dir"] = str(entry)
    return meta


def _valid(entry: Path) -> dict | None:
    """The entry's metadata if complete and intact; a damaged entry loses its bad files and
    its completeness (so it is filled again) and None is returned."""
    meta = _read_meta(entry)
    if meta is None:
        return None
    bad = [rel for rel, rec in meta["files"].items() if not _intact(entry / "data" / rel, rec)]
    if not bad:
        return meta
    log(f"[yellow]source cache {entry}: {len(bad)} file(s) missing or changed ({', '.join(bad[:3])}); "
        f"acquiring them again[/yellow]")
    (entry / COMPLETE).unlink()
    keep = getattr(_module_of(meta["kind"]), "STATE_FILE", None)
    for rel in meta["files"]:  # acquire rewrites what it delivers; its own state (a snapshot id) stays
        if rel != keep:
            (entry / "data" / rel).unlink(missing_ok=True)
    return None


def _module_of(kind: str):
    from . import MODULES
    return importlib.import_module(f"{__package__}.{MODULES[kind]}") if kind in MODULES else None


def cached_copy(path: Path) -> Path | None:
    """The cache entry file a run's raw file is a hard link of (to name it in a message), if any."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    root = Path(path).resolve()
    for parent in root.parents:  # <runs>/<run>/data/raw/<name>/<file> or deeper in a sweep
        entries = parent / CACHE
        if entries.is_dir():
            for f in entries.glob("*/data/**/*"):
                if f.is_file() and f.stat().st_ino == st.st_ino and f.stat().st_dev == st.st_dev:
                    return f
    return None


def _intact(path: Path, rec: dict) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != rec["size"]:
        return False
    return st.st_mtime_ns == rec["mtime_ns"] or sha256_file(path) == rec["sha256"]


def _covering(src, runs_dir, ident: dict) -> dict | None:
    """A complete entry whose data covers what is asked (the module's `cache_covers`), if any."""
    from . import module
    covers = getattr(module(src), "cache_covers", None)
    if covers is None:
        return None
    for entry in sorted(p for p in cache_root(runs_dir).iterdir() if p.is_dir()):
        other = _read_meta(entry)
        if other and other["identity"].get("kind") == ident["kind"] and covers(ident, other["identity"]):
            return _valid(entry)
    return None


def _fill(src, entry: Path, ident: dict, allow_paid: bool, console) -> dict:
    from . import acquire
    data = entry / "data"
    data.mkdir(parents=True, exist_ok=True)
    write_json(entry / IDENTITY, ident)
    paths = acquire(src, data, console=console or _console, allow_paid=allow_paid)
    outside = [str(p) for p in paths if not Path(p).resolve().is_relative_to(data.resolve())]
    if outside:
        raise WebtuneError(f"source {src.name!r} ({src.kind}): acquire returned files outside its folder "
                           f"{data}: {outside[:3]}; this is a bug, please report it")
    files = {}
    for f in sorted(p for p in data.rglob("*") if p.is_file()):
        f.chmod(0o444)  # shared by hard links: an in-place edit must not reach the cache
        st = f.stat()
        files[f.relative_to(data).as_posix()] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                 "sha256": sha256_file(f)}
    meta = {"key": entry.name, "kind": src.kind, "name": src.name, "identity": ident,
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "paths": [Path(p).resolve().relative_to(data.resolve()).as_posix() for p in paths],
            "root": ident.get("root"), "files": files}
    write_json(entry / COMPLETE, meta)
    meta["dir"] = str(entry)
    return meta


# ---------------------------------------------------------------- `webtune sources list|show|forget`
def command(ns) -> int:
    root = cache_root(getattr(ns, "runs_dir", None) or "runs")
    if ns.action == "list":
        return _list(root)
    if not getattr(ns, "key", None):
        raise WebtuneError(f"usage: webtune sources {ns.action} KEY (see `webtune sources list`)")
    entry = _find(root, ns.key)
    if ns.action == "show":
        return _show(entry)
    if ns.action == "forget":
        with locked(entry):
            shutil.rmtree(entry)
        entry.with_name(entry.name + ".lock").unlink(missing_ok=True)
        log(f"forgot source snapshot {entry.name} ({entry}); runs that used it keep their own hard links")
        return 0
    raise WebtuneError(f"webtune sources: unknown action {ns.action!r}; use list, show KEY or forget KEY")


def entries(root: Path) -> list[dict]:
    found = []
    for entry in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        meta = _read_meta(entry) or {"key": entry.name, "kind": "?", "name": "?", "files": {},
                                     "created": None, "incomplete": True}
        meta["bytes"] = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        found.append(meta)
    return found


def _list(root: Path) -> int:
    from rich.table import Table
    rows = entries(root)
    if not rows:
        log(f"no cached source snapshots in {root}")
        return 0
    table = Table(title=f"source snapshots in {root}")
    for col in ("key", "kind", "source", "files", "size", "age", "state"):
        table.add_column(col)
    for m in rows:
        table.add_row(m["key"][:12], m["kind"], m["name"], str(len(m["files"])), _size(m["bytes"]),
                      _age(m["created"]), "incomplete" if m.get("incomplete") else "complete")
    _console.print(table)
    return 0


def _show(entry: Path) -> int:
    meta = _read_meta(entry)
    ident = json.loads((entry / IDENTITY).read_text()) if (entry / IDENTITY).exists() else {}
    print(json.dumps({"key": entry.name, "dir": str(entry), "complete": meta is not None,
                      "created": (meta or {}).get("created"), "identity": ident,
                      "files": {k: v["size"] for k, v in (meta or {}).get("files", {}).items()}}, indent=2))
    return 0


def _find(root: Path, key: str) -> Path:
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(key)] if root.is_dir() else []
    if len(matches) != 1:
        what = "no" if not matches else f"{len(matches)}"
        raise WebtuneError(f"{what} cached source snapshot(s) in {root} start with {key!r}; "
                           f"see `webtune sources list`")
    return matches[0]


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _age(created: str | None) -> str:
    if not created:
        return "-"
    seconds = time.time() - _dt.datetime.fromisoformat(created).timestamp()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"
