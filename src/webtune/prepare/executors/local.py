"""prepare.executor=local: the map / reduce / map on `prepare.workers` local processes, one shard
each (in this process when there is one worker), with a rich progress line for the map."""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
from contextlib import nullcontext
from pathlib import Path

from ...errors import WebtuneError, one_line
from ...textsig.dedupe import pool_started
from ..mapper import map_shard
from ..reduce import finish_shard, keeper_ids, reduce_signatures
from . import Outcome


def run_local(cfg, run_dir: Path, work: Path, inputs: list, console=None) -> Outcome:
    """The map / reduce / map on `prepare.workers` local processes, one shard each."""
    workers = int(cfg.prepare.workers or 0) or os.cpu_count() or 1
    seconds = {}
    t0 = time.perf_counter()
    mapped = in_processes(map_shard, [(cfg, run_dir, work, inputs, s, workers) for s in range(workers)],
                          console, with_progress=True)
    seconds["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = reduce_signatures(cfg, work, workers)
    names = keeper_ids(work, plan)
    seconds["reduce"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    finals = in_processes(finish_shard, [(run_dir, work, s, plan, names) for s in range(workers)])
    seconds["write"] = time.perf_counter() - t0
    return Outcome(workers, workers, mapped, plan, finals, seconds, {})


def in_processes(fn, shard_args: list[tuple], console=None, with_progress: bool = False) -> list[dict]:
    """fn(*shard_args[s]) for every shard s, one process each (in this process when there is one)."""
    with _progress(console if with_progress else None) as bar:
        inline = _InlineProgress(bar, bar.add_task("prepare", total=None)) if bar else None
        if len(shard_args) == 1:
            return [fn(*shard_args[0], inline) if with_progress else fn(*shard_args[0])]
        return _Pool(fn, shard_args, with_progress).results(inline)


class _Pool:
    """One process per shard; results (or the first error) come back through a queue."""

    def __init__(self, fn, shard_args: list[tuple], with_progress: bool):
        ctx = mp.get_context(_start_method())
        self.n = len(shard_args)
        self.progress = ctx.RawArray("q", self.n) if with_progress else None
        self.queue = ctx.Queue()
        self.procs = [ctx.Process(target=_worker, args=(fn, args, s, self.progress, self.queue),
                                  name=f"webtune-prepare-{s}", daemon=True) for s, args in enumerate(shard_args)]
        for proc in self.procs:
            proc.start()

    def results(self, inline=None) -> list[dict]:
        out: dict[int, dict] = {}
        try:
            while len(out) < self.n:
                try:
                    shard, status, payload = self.queue.get(timeout=0.2)
                except queue.Empty:
                    self._show(inline)
                    self._check_alive()
                    continue
                out[shard] = _payload(shard, status, payload)
            self._show(inline)
        finally:
            for proc in self.procs:
                if proc.is_alive() and len(out) < self.n:
                    proc.terminate()
                proc.join()
        return [out[s] for s in range(self.n)]

    def _show(self, inline) -> None:
        if inline:
            inline[0] = sum(self.progress)

    def _check_alive(self) -> None:
        dead = [p for p in self.procs if p.exitcode not in (None, 0)]
        if dead and self.queue.empty():
            raise WebtuneError(f"prepare worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                               f"try prepare.workers=1 to see the error") from None


def _payload(shard: int, status: str, payload):
    if status == "error":
        raise WebtuneError(payload)
    if status == "crash":   # one line for people; the worker's traceback goes to run.log
        summary, trace = payload
        logging.getLogger("webtune").error("prepare worker %s crashed:\n%s", shard, trace)
        raise RuntimeError(f"prepare worker {shard} crashed: {summary}")
    return payload


def _worker(fn, args, shard, progress, results):
    try:
        results.put((shard, "ok", fn(*args, progress) if progress is not None else fn(*args)))
    except WebtuneError as e:
        results.put((shard, "error", str(e)))
    except OSError as e:   # a full disk, a quota: the user's to fix, said in one line
        results.put((shard, "error", f"prepare worker {shard}: {one_line(e)}"))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        import traceback
        results.put((shard, "crash", (one_line(e), traceback.format_exc())))


def _start_method() -> str:
    """fork: workers start in milliseconds with everything imported, and callers need no
    `if __name__ == "__main__"` guard (the progress thread starts only after the fork); but not
    from a process that already hashed with rensa (a sweep, a second run): its thread pool does not
    survive a fork, so those get a fresh forkserver."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and not pool_started():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _progress(console):
    """The map's progress line on `console` (none without one)."""
    if console is None:
        return nullcontext()
    from rich.progress import MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

    from ...console import progress  # here: rich.progress costs a cold start ~0.1 s of CPU

    return progress(SpinnerColumn(), TextColumn("{task.description}"), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)


class _InlineProgress:
    """The map's progress on the bar: `progress[shard] = done` from the single in-process worker,
    or the parent's sum of the workers' counters."""

    def __init__(self, bar, task):
        self.bar, self.task, self.start = bar, task, time.perf_counter()

    def __setitem__(self, shard, done):
        rate = done / max(1e-9, time.perf_counter() - self.start)
        self.bar.update(self.task, completed=done, description=f"prepare: {rate:,.0f} records/s")
