"""Asking the teacher for every request not in the cache: bounded concurrency (`teacher.max_concurrency`
threads over one SDK client), a rich progress line with tokens and cost, each reply cached the moment
it is in. A reply that does not parse is asked once more (the next seed); both replies are kept.
Nothing here decides the output's order: the step reads the cache in input order afterwards, so
the bytes do not depend on which reply came back first."""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass
from typing import Callable

from ..sources.brightdata_cost import usd
from .cache import ReplyCache
from .client import Teacher
from .plan import Budget

CAP_REACHED = "cap_reached"


@dataclass
class Job:
    """One request: what is sent, how its reply parses, what it is estimated to cost."""

    key: str
    messages: list[dict]
    schema: dict | None
    parse: Callable[[str], object]       # reply text -> result, or None when unusable
    estimate: tuple[int, int]            # (input, output) tokens
    model: str


def result_of(entry: dict | None, parse: Callable[[str], object]):
    """The parsed result of a cached entry: its first usable reply, else None."""
    for reply in (entry or {}).get("replies", []):
        got = parse(reply["text"])
        if got is not None:
            return got
    return None


def ask_one(teacher: Teacher, job: Job, cache: ReplyCache, budget: Budget) -> dict | str:
    """Ask (and, if the reply does not parse, ask once more); cache and return the entry, or
    CAP_REACHED when the caps left no room for the first request."""
    replies = []
    for attempt in range(2):
        if not budget.take(job.estimate, reask=attempt > 0):
            if not replies:
                return CAP_REACHED
            break
        reply = teacher.chat(job.messages, job.schema, job.model, seed_offset=attempt)
        budget.spent(reply.input_tokens, reply.output_tokens)
        replies.append({"text": reply.text, "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                        "finish_reason": reply.finish_reason})
        if job.parse(reply.text) is not None:
            break
    entry = {"model": job.model, "replies": replies}
    if len(replies) == 2 or job.parse(replies[-1]["text"]) is not None:
        cache.put(job.key, entry)    # an answer we keep; a cap that cut a re-ask short is asked again next time
    return entry


def ask_all(teacher: Teacher, jobs: list[Job], cache: ReplyCache, budget: Budget, what: str,
            console=None) -> dict[str, dict | str]:
    """Every job's entry (or CAP_REACHED), by key. A failure (a rate limit outlasting the SDK's retries,
    a refused key) stops new requests, lets the ones in flight finish and be cached, and is raised."""
    if not jobs:
        return {}
    out: dict[str, dict | str] = {}
    t = teacher.t
    with _bar(console) as bar:
        task = bar.add_task(f"teacher: {what}", total=len(jobs)) if bar else None
        with cf.ThreadPoolExecutor(max_workers=max(1, int(t.max_concurrency)), thread_name_prefix="teacher") as pool:
            futures = {pool.submit(ask_one, teacher, job, cache, budget): job for job in jobs}
            try:
                for fut in cf.as_completed(futures):
                    out[futures[fut].key] = fut.result()
                    if bar:
                        cost = budget.cost
                        bar.update(task, advance=1, description=(
                            f"teacher: {what}: {budget.input_tokens:,} in / {budget.output_tokens:,} out tokens"
                            + (f", {usd(cost)}" if cost is not None else "")))
            except BaseException:
                for f in futures:
                    f.cancel()      # not started: not sent; the ones in flight finish and are cached
                raise
    return out


def _bar(console):
    from contextlib import nullcontext
    if console is None:
        return nullcontext()
    from ..console import progress
    return progress(console=console)
