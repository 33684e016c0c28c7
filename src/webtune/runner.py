"""Sequences stages; knows nothing about any of them.

One rule gives resume, skip and cache: a stage's key is the hash of the config it reads, the
versions of the libraries that shape its output, the hub revisions it loads, the files it reads
from outside the run directory, its inputs' hashes and the code version. The config a stage reads
is built in one place, `stage_config`: the stage function gets only the sections its key holds
(plus `context`, read but not shaping the output), so a read of anything else fails loudly instead
of going stale. A stage
whose key and outputs match the manifest is skipped; one whose key is in `runs/.cache/<stage>/<key>/`
is restored by hard links; otherwise it runs, writing its outputs, and is then cached.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

from omegaconf import OmegaConf

from . import __version__
from .rundir import MANIFEST, git_commit, package_versions
from .fileio import atomic_write_bytes, atomic_write_text, hash_path, link_tree, read_json, sha256_text, write_json


@dataclass
class StageContext:
    cfg: object          # the composed DictConfig
    run_dir: Path
    console: object
    log: Callable[[str], None]


@dataclass
class Stage:
    name: str
    run: Callable[[StageContext], dict | None]   # returns stats, saved as stats/<name>.json
    config: list[str]                            # dotted config sections it reads (in its key)
    inputs: list[str] = field(default_factory=list)    # run-dir paths written by earlier stages
    outputs: list[str] = field(default_factory=list)   # run-dir paths it writes (files or folders)
    external: Callable[[object], list[Path]] = lambda cfg: []  # files read from outside the run dir
    enabled: Callable[[object], bool] = lambda cfg: True
    cacheable: bool = True
    keep: list[str] = field(default_factory=list)  # state that survives a rerun (a remote job's id)
    scratch: list[str] = field(default_factory=list)  # work folders (checkpoints) valid only for one key
    context: list[str] = field(default_factory=list)  # config it reads that cannot change its output (runs_dir)
    libraries: list[str] = field(default_factory=list)  # distributions whose version shapes its output
    revisions: Callable[[object], dict] = lambda cfg: {}  # resolved hub revisions of what it loads
    whole_config: bool = False  # reads the whole config (the report shows it); not cacheable then


@lru_cache(maxsize=1)
def code_version() -> str:
    """The hash of webtune's own source: a code change invalidates every cached stage."""
    root = Path(__file__).parent
    return sha256_text("".join(f"{p.relative_to(root)}:{hash_path(p)}\n"
                               for p in sorted(root.rglob("*.py"))))


def select(cfg, dotted: str):
    node = OmegaConf.select(cfg, dotted)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def stage_config(stage: Stage, cfg):
    """What the stage function sees as `ctx.cfg`: only its `config` and `context` sections, resolved,
    read-only; any other key raises (so a stage cannot read a value its key does not hold)."""
    if stage.whole_config:
        return cfg
    view = OmegaConf.create({})
    for dotted in stage.config + stage.context:
        OmegaConf.update(view, dotted, select(cfg, dotted), force_add=True)
    OmegaConf.set_struct(view, True)
    OmegaConf.set_readonly(view, True)
    return view


def stage_key(stage: Stage, cfg, run_dir: Path, versions: dict[str, str] | None = None) -> tuple[str, dict]:
    """The stage's key and its inputs' hashes; `versions` maps distribution names to versions
    (default: the installed ones of `stage.libraries`)."""
    versions = package_versions(stage.libraries) if versions is None else versions
    inputs = {p: hash_path(run_dir / p) for p in stage.inputs if (run_dir / p).exists()}
    external = {str(p): hash_path(p) for p in stage.external(cfg)}
    material = {"stage": stage.name, "config": {k: select(cfg, k) for k in stage.config},
                "versions": {n: versions.get(n) for n in sorted(stage.libraries)},
                "revisions": stage.revisions(cfg),
                "inputs": inputs, "external": external, "code": code_version()}
    return sha256_text(json.dumps(material, sort_keys=True, default=str)), inputs


class Runner:
    def __init__(self, cfg, run_dir: Path, stages: list[Stage], console, log=print, use_cache: bool = True,
                 versions: dict[str, str] | None = None):
        self.cfg, self.run_dir, self.stages, self.console, self.log = cfg, Path(run_dir), stages, console, log
        self.cache_root = Path(cfg.runs_dir) / ".cache"
        self.use_cache = use_cache
        self.versions = versions if versions is not None else package_versions(
            sorted({n for s in stages for n in s.libraries}))
        self.manifest = read_json(self.run_dir / MANIFEST) or {
            "webtune": __version__, "git_commit": git_commit(), "packages": package_versions(), "stages": {}}
        from .base_model import run_provenance   # the base's package, sha256 and licence, before any stage
        self.manifest.setdefault("base_model", run_provenance(cfg.get("model")))

    def run(self, only: set[str] | None = None) -> dict:
        for stage in self.stages:
            if not stage.enabled(self.cfg) or (only and stage.name not in only):
                continue
            self.run_stage(stage)
        return self.manifest

    def outputs_of(self, stage: Stage) -> list[str]:
        return stage.outputs + [f"stats/{stage.name}.json"]

    def pending(self, stage: Stage) -> bool:
        """Whether run_stage would run the stage (neither skip it as unchanged nor restore it from the cache)."""
        return self._decide(stage)[0] == "run"

    def _decide(self, stage: Stage) -> tuple[str, str, dict, dict | None]:
        """("skip" | "restore" | "run", key, input hashes, the cache entry's output hashes):
        the one rule behind skip, cache and resume."""
        key, inputs = stage_key(stage, self.cfg, self.run_dir, self.versions)
        done = self.manifest["stages"].get(stage.name)
        if done and done["key"] == key and self._outputs_match(done["outputs"]):
            return "skip", key, inputs, None
        cached = self._cache_entry(self.cache_root / stage.name / key) if self.use_cache and stage.cacheable else None
        return ("restore" if cached is not None else "run"), key, inputs, cached

    def run_stage(self, stage: Stage, before_run: Callable[[], None] | None = None) -> str:
        """Skip, restore or run the stage; `before_run` is called once its old outputs are cleared,
        right before it runs (where a multi-process run lets the other ranks start training)."""
        verdict, key, inputs, cached = self._decide(stage)
        outputs = self.outputs_of(stage)
        if verdict == "skip":
            self.log(f"[dim]{stage.name}: unchanged, skipped[/dim]")
            return "skipped"
        cache_dir = self.cache_root / stage.name / key
        if verdict == "restore":
            self._restore(cache_dir, outputs)
            self._record(stage, key, inputs, cached, 0.0, cached=True)
            self.log(f"{stage.name}: restored from cache {cache_dir}")
            return "cached"
        kept = {p: (self.run_dir / p).read_bytes() for p in stage.keep if (self.run_dir / p).is_file()}
        for out in outputs:  # a half-written output from a killed run is never trusted
            _remove(self.run_dir / out)
        for p, data in kept.items():
            atomic_write_bytes(self.run_dir / p, data)
        for folder in stage.scratch:  # checkpoints made under another key must not be resumed
            marker = self.run_dir / folder / ".stage-key"
            if (self.run_dir / folder).exists() and (not marker.exists() or marker.read_text() != key):
                _remove(self.run_dir / folder)
            atomic_write_text(marker, key)
        self.log(f"[bold]{stage.name}[/bold]: running")
        if before_run is not None:
            before_run()
        start = time.perf_counter()
        stats = stage.run(self.context(stage)) or {}
        seconds = time.perf_counter() - start
        stats.setdefault("seconds", round(seconds, 3))
        write_json(self.run_dir / "stats" / f"{stage.name}.json", stats)
        hashes = {p: hash_path(self.run_dir / p) for p in outputs if (self.run_dir / p).exists()}
        self._record(stage, key, inputs, hashes, seconds)
        if self.use_cache and stage.cacheable:
            self._store(cache_dir, hashes)
        self.log(f"{stage.name}: done in {seconds:.1f}s")
        return "ran"

    def context(self, stage: Stage) -> StageContext:
        return StageContext(stage_config(stage, self.cfg), self.run_dir, self.console, self.log)

    def _outputs_match(self, recorded: dict) -> bool:
        return all((self.run_dir / p).exists() and hash_path(self.run_dir / p) == h for p, h in recorded.items())

    def _record(self, stage, key, inputs, hashes: dict[str, str], seconds, cached=False) -> None:
        self.manifest["stages"][stage.name] = {
            "key": key, "inputs": inputs, "outputs": hashes, "seconds": round(seconds, 3), "cached": cached}
        write_json(self.run_dir / MANIFEST, self.manifest)

    def _cache_entry(self, cache_dir: Path) -> dict[str, str] | None:
        """The entry's output hashes, if it is complete and every file still has the hash it was
        stored with; otherwise None (and a modified entry is discarded)."""
        marker = cache_dir / ".complete"
        if not marker.exists():
            return None
        recorded = json.loads(marker.read_text() or "{}")
        if all((cache_dir / p).exists() and hash_path(cache_dir / p) == h for p, h in recorded.items()):
            return recorded
        self.log(f"[yellow]{cache_dir}: cached files were modified; discarding the entry[/yellow]")
        _remove(cache_dir)
        return None

    def _store(self, cache_dir: Path, hashes: dict[str, str]) -> None:
        """Hard-link the outputs (hashed as recorded in the manifest) into the cache."""
        tmp = cache_dir.with_name(cache_dir.name + f".tmp{os.getpid()}")
        _remove(tmp)
        for out in hashes:
            src = self.run_dir / out
            _read_only(src)  # shared by hard links: an in-place edit must not reach the cache
            link_tree(src, tmp / out)
        (tmp / ".complete").write_text(json.dumps(hashes))
        if cache_dir.exists() and not (cache_dir / ".complete").exists():
            _remove(cache_dir)  # unfinished (killed while being discarded, or edited): replace it
        try:
            tmp.rename(cache_dir)
        except OSError:  # another run stored the same key first
            _remove(tmp)

    def _restore(self, cache_dir: Path, outputs: list[str]) -> None:
        for out in outputs:
            _remove(self.run_dir / out)
            if (cache_dir / out).exists():
                link_tree(cache_dir / out, self.run_dir / out)


def _read_only(path: Path) -> None:
    for f in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        f.chmod(f.stat().st_mode & 0o555)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
