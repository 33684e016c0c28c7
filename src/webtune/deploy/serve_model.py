"""The model `webtune serve` serves: TARGET resolved (a directory, a pinned registry version, or a
registry name whose pointer it follows), loaded with its engine, and swapped when the pointer moves.
Requests already running finish on the old version; with `free_before_load` the old one is released
before the new one loads, so two are never resident."""
from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from webtune.deploy import registry as reg
from webtune.deploy.generate import LocalModel, load_model
from webtune.deploy.serve_engine import Engine, EngineFactory
from webtune.errors import WebtuneError

log = logging.getLogger("uvicorn.error")  # next to uvicorn's own lines
DEFAULT_REGISTRY = "runs/registry"


@dataclass
class ModelSource:
    """TARGET resolved: a fixed directory, a pinned registry version, or a registry name to follow."""
    name: str
    directory: Optional[Path] = None
    registry: Optional[Path] = None
    version: Optional[int] = None

    @classmethod
    def parse(cls, target: str | Path, registry: str | Path = DEFAULT_REGISTRY) -> "ModelSource":
        path = Path(target)
        if path.is_dir():
            return cls(path.resolve().name, directory=path)
        m = reg.TARGET_RE.match(str(target))
        if not m:
            raise WebtuneError(f"{target}: neither a directory nor NAME[@vN] from the registry {registry}")
        source = cls(m["name"], registry=Path(registry), version=int(m["version"]) if m["version"] else None)
        reg.resolve(registry, str(target))  # a one-line error now if the name or version is unknown
        return source

    def versions(self) -> list[int]:
        """The registered versions servable as `NAME@vN` besides NAME (a name followed in the registry)."""
        if self.registry is None or self.version is not None:
            return []
        mdir = self.registry / self.name
        return sorted(int(p.name[1:]) for p in mdir.glob("v*") if p.name[1:].isdigit()
                      and (p / "model").is_dir() and not (p / "openai_model.json").exists())

    def current(self) -> tuple[str, Path]:
        """(label, model directory) of what should be served now."""
        if self.directory is not None:
            return "run", self.directory / "model" if (self.directory / "model").is_dir() else self.directory
        version = self.version
        if version is None:
            cur = reg.read_current(self.registry, self.name)
            if cur is None:
                raise WebtuneError(f"{self.name} has no promoted version in {self.registry}; run `webtune "
                                   f"models promote {self.name} N`, or serve {self.name}@vN")
            version = cur["version"]
        vdir = self.registry / self.name / f"v{version}"
        if (vdir / "openai_model.json").exists():
            raise WebtuneError(f"{self.name} v{version} is an OpenAI model; it is served by OpenAI, "
                               f"not by `webtune serve`")
        return f"v{version}", vdir / "model"


@dataclass(eq=False)
class Served:
    """One loaded version and the requests using it (`users`; `idle` is set when none are)."""
    lm: Optional[LocalModel]
    engine: Optional[Engine]
    label: str
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def fingerprint(self, name: str) -> str:
        return f"{name}@{self.label}"


class ModelHolder:
    """The model being served, swapped when the source's pointer moves. `acquire`/`release` bracket
    every request, so a swap knows when the old version's requests have finished."""

    def __init__(self, source: ModelSource, make_engine: EngineFactory, free_before_load: bool,
                 load_lm: Callable[[Path], LocalModel] = load_model):
        self.source, self.make_engine, self.free_before_load = source, make_engine, free_before_load
        self.load_lm = load_lm  # vLLM's engine loads no weights here: vllm_engine.load_front
        self.served: Optional[Served] = None
        self.lock = asyncio.Lock()
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webtune-load")
        self.resident: "weakref.WeakSet[Any]" = weakref.WeakSet()  # loaded torch models still alive
        self.peak_resident = 0
        self.retiring: set[asyncio.Task] = set()  # old versions finishing their requests
        self.pinned: dict[str, Served] = {}  # NAME@vN asked for by id, loaded on first use, kept

    def load(self, label: str, model_dir: Path) -> Served:
        lm = self.load_lm(model_dir)
        gc.collect()
        self.resident.add(lm.model)
        self.peak_resident = max(self.peak_resident, len(self.resident))
        served = Served(lm, self.make_engine(lm), label)
        log.info("serving %s %s from %s", self.source.name, label, model_dir)
        return served

    def model_ids(self) -> list[str]:
        """What a request's `model` may name: NAME (the promoted version) and every NAME@vN."""
        return [self.source.name] + [f"{self.source.name}@v{v}" for v in self.source.versions()]

    async def acquire(self, model: Optional[str] = None) -> Served:
        """A lease on NAME's current version, or on the version `model` (NAME@vN) pins."""
        if model is not None and model != self.source.name:
            return await self.acquire_pinned(model)
        label, model_dir = self.source.current()
        if self.served is None or self.served.label != label:
            async with self.lock:  # one swap at a time; requests arriving meanwhile wait here
                if self.served is None or self.served.label != label:
                    await self.swap(label, model_dir)
        self.served.users += 1
        self.served.idle.clear()
        return self.served

    async def acquire_pinned(self, model: str) -> Served:
        label = model.rpartition("@")[2]
        if label not in self.pinned:
            async with self.lock:
                if label not in self.pinned:
                    model_dir = self.source.registry / self.source.name / label / "model"
                    self.pinned[label] = await asyncio.get_running_loop().run_in_executor(
                        self.loader, self.load, label, model_dir)
        served = self.pinned[label]
        served.users += 1
        served.idle.clear()
        return served

    def release(self, served: Served) -> None:
        served.users -= 1
        if served.users == 0:
            served.idle.set()

    async def swap(self, label: str, model_dir: Path) -> None:
        old, self.served = self.served, None
        if old is not None and self.free_before_load:
            await retire(old)
            old = None
            free_memory()
        try:
            self.served = await asyncio.get_running_loop().run_in_executor(self.loader, self.load, label,
                                                                           model_dir)
        except Exception:
            self.served = old  # keep answering with the old version (None if it was freed first)
            raise
        if old is not None:
            task = asyncio.get_running_loop().create_task(retire(old))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)

    def close(self) -> None:
        for served in [self.served, *self.pinned.values()]:
            if served is not None:
                served.engine.close()


async def retire(old: Served) -> None:
    """Let the old version's requests finish, then stop its engine and drop the model."""
    if old.users:
        await old.idle.wait()
    await asyncio.get_running_loop().run_in_executor(None, old.engine.close)
    old.engine = old.lm = None


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()
