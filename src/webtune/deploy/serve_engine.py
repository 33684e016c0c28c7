"""What `webtune serve` needs of a decoding engine, and the one bridge from the engine's thread to
asyncio. `batching.BatchEngine` (continuous batching, one decode thread) is the engine the server
runs; anything with `submit` and `close` below can stand in for it. Every sequence of one request
is submitted with the same `group`: an engine shares its free slots among groups, so a small
request waits on no more than a slot, however many sequences a large one queued before it."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable, Hashable, Iterable, Optional, Protocol

from webtune.deploy.batching import BatchEngine
from webtune.deploy.generate import Generation, GenerationSettings, LocalModel

# called from the engine's thread: with each text piece (None), then once with "" and the finished
# Generation (or the exception that ended it)
Emit = Callable[[str, Any], None]
# (index of the choice, prompt ids, settings, most new tokens)
Job = tuple[int, list[int], GenerationSettings, int]
# (index of the choice, text piece, the Generation once it is done, else None)
Event = tuple[int, str, Optional[Generation]]


class SequenceHandle(Protocol):
    def cancel(self) -> None:
        """Stop generating at the next step (called from the event loop's thread)."""


class Engine(Protocol):
    def submit(self, prompt_ids: list[int], settings: GenerationSettings, max_new: int,
               emit: Emit, group: Hashable = None) -> SequenceHandle:
        """Start one sequence of request `group` (thread-safe); its text comes through `emit`."""

    def close(self) -> None:
        """Finish the running sequences, then stop (blocking)."""


EngineFactory = Callable[[LocalModel], Engine]


def batch_engine(max_batch: int, threads: int) -> EngineFactory:
    """The factory the server uses: a BatchEngine decoding up to `max_batch` sequences together."""
    return lambda lm: BatchEngine(lm, max_batch, threads)


async def decode(engine: Engine, jobs: Iterable[Job], group: Hashable = None) -> AsyncIterator[Event]:
    """Submit every job (one request's, `group`) and yield their events in the order they come,
    until each job's Generation has come; an engine failure is raised here. Leaving early cancels
    what is still running."""
    loop, inbox = asyncio.get_running_loop(), asyncio.Queue()
    loop_thread = threading.get_ident()

    def emitter(index: int) -> Emit:
        def emit(piece: str, gen: Any) -> None:
            if threading.get_ident() == loop_thread:  # an engine on the event loop (vLLM's): no wake-up
                inbox.put_nowait((index, piece, gen))
                return
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, (index, piece, gen))
            except RuntimeError:  # the event loop is gone (server shutting down)
                pass
        return emit

    seqs = [engine.submit(ids, settings, max_new, emitter(index), group=group)
            for index, ids, settings, max_new in jobs]
    done = 0
    try:
        while done < len(seqs):
            index, piece, gen = await inbox.get()
            if isinstance(gen, BaseException):
                raise gen
            done += gen is not None
            yield index, piece, gen
    finally:
        for seq in seqs:
            seq.cancel()
