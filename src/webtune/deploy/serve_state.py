"""The state of one `webtune serve` app (`Server`, kept in `app.state.server`) and one admitted
request (`Call`): the settings, the model holder, the gate that counts sequences (prompts x n) and
answers 429 with Retry-After past the queue, the limits that answer 400, the tokeniser's own thread,
and the request log line (counts and timings; prompt text only if asked)."""
from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Iterator, Optional

from webtune.deploy.generate import Generation, LocalModel
from webtune.deploy.openai_api import APIError, SamplingRequest, Usage, check_model
from webtune.deploy.serve_engine import Event, Job, decode
from webtune.deploy.serve_model import ModelHolder, Served

log = logging.getLogger("uvicorn.error")  # next to uvicorn's own lines


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: Optional[str] = None   # env var holding the bearer key clients must send
    no_auth: bool = False               # allow a non-loopback host without a key, on purpose
    max_tokens: int = 512               # default for a request without max_tokens, and the most allowed
    max_concurrency: int = 32           # sequences decoding together (one batch)
    queue_size: int = 64                # sequences waiting beyond those; more get 429
    max_request_sequences: int = 32     # prompts x n one request may ask for; more is a 400
    max_body_bytes: int = 4 * 2 ** 20   # a larger request body is a 413, refused before parsing
    threads: int = 0                    # torch threads of the decode thread (0: half the cores)
    log_prompts: bool = False           # put prompt text in the request log
    free_before_load: Optional[bool] = None  # release the old model before loading a new one (None: on GPU)
    engine: str = "transformers"        # transformers | vllm | auto (vllm if found): see vllm_engine
    vllm: Optional[Any] = None          # vllm_engine.VllmSettings for engine vllm (None: defaults)
    system: Optional[str] = None        # system prompt for requests with none (None: the run's trained one)

    def new_tokens(self, max_context: int, prompt_len: int, wanted: Optional[int], param: str) -> int:
        """New tokens for one prompt: the request's max_tokens, or the server's default; else a 400."""
        if wanted is not None and wanted > self.max_tokens:
            raise APIError(400, f"max_tokens is {wanted}, more than this server allows ({self.max_tokens}, "
                                f"`webtune serve --max-tokens`); ask for fewer", param="max_tokens")
        room = max_context - prompt_len
        if room <= 0 or (wanted is not None and wanted > room):
            raise APIError(400, f"This model's maximum context length is {max_context} tokens; the prompt "
                                f"has {prompt_len} tokens and max_tokens is {wanted if wanted is not None else 'unset'}"
                                f"; shorten the prompt or lower max_tokens", param=param,
                           code="context_length_exceeded")
        return min(self.max_tokens, room) if wanted is None else wanted


class Gate:
    """At most `limit` sequences admitted (decoding or queued), a request counting prompts x n;
    beyond that, 429 with a Retry-After: the time until enough sequences finish at the rate they
    finished lately, or, when none has finished lately, how long the oldest admitted request has
    been running (the soonest a place may free up), 1 to 60 s."""

    WINDOW_S = 30.0

    def __init__(self, limit: int):
        self.limit, self.admitted, self.requests = limit, 0, 0
        self.finished: collections.deque[tuple[float, int]] = collections.deque()  # (when, sequences)
        self.since: collections.Counter[float] = collections.Counter()  # admission times of those admitted

    def admit(self, sequences: int) -> float:
        """Admit `sequences` (else a 429); the admission time, which `leave` takes back."""
        if self.admitted + sequences > self.limit:
            raise APIError(429, f"Too many requests: {self.admitted} of this server's {self.limit} sequences are "
                                f"decoding or queued and this request needs {sequences}; retry after the "
                                f"Retry-After seconds", type="requests", code="rate_limit_exceeded",
                           retry_after=self.retry_after(sequences))
        self.admitted += sequences
        self.requests += 1
        admitted_at = time.monotonic()
        self.since[admitted_at] += 1
        return admitted_at

    def leave(self, sequences: int, admitted_at: float, decoded: bool = True) -> None:
        self.admitted -= sequences
        self.requests -= 1
        self.since[admitted_at] -= 1
        if not self.since[admitted_at]:
            del self.since[admitted_at]
        if decoded:
            self.finished.append((time.monotonic(), sequences))

    def retry_after(self, sequences: int) -> int:
        now = time.monotonic()
        while self.finished and self.finished[0][0] < now - self.WINDOW_S:
            self.finished.popleft()
        rate = sum(n for _, n in self.finished) / self.WINDOW_S
        if rate > 0:
            wait = (self.admitted + sequences - self.limit) / rate
        else:
            wait = now - min(self.since, default=now)
        return min(60, max(1, math.ceil(wait)))


@dataclass(eq=False)
class Server:
    """What the handlers share: the served name, the settings, the model, the gate, the key, and
    the one thread that tokenises (off the event loop, so /health and streams never wait on a
    chat template; one, because a fast tokenizer must not be driven from two threads at once)."""
    name: str
    config: ServeConfig
    holder: ModelHolder
    gate: Gate
    api_key: Optional[str] = None
    tokenizer_thread: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="webtune-tokenize"))

    def close(self) -> None:
        self.tokenizer_thread.shutdown(wait=False, cancel_futures=True)
        self.holder.close()

    @property
    def max_request_sequences(self) -> int:
        return min(self.config.max_request_sequences, self.gate.limit)

    async def open_call(self, route: str, body: SamplingRequest,
                        prompts_of: Callable[[LocalModel], list[list[int]]]) -> "Call":
        """Admit one request: its model named right, its sequences within the per-request cap and
        the gate, a lease on the model, its prompts tokenised and within limits. The caller ends it
        with `Call.end()`."""
        check_model(body.model, self.holder.model_ids())
        sequences = body.sequences
        if sequences > self.max_request_sequences:
            raise APIError(400, f"this request asks for {body.prompt_count} prompt(s) x n={body.n} = {sequences} "
                                f"sequences; this server decodes at most {self.max_request_sequences} for one "
                                f"request (`webtune serve --max-request-sequences`); split it into smaller "
                                f"requests", param="n" if body.prompt_count == 1 else "prompt",
                           code="too_many_sequences")
        admitted_at = self.gate.admit(sequences)
        served = None
        try:
            served = await self.holder.acquire(body.model)
            prompts = await asyncio.get_running_loop().run_in_executor(self.tokenizer_thread, prompts_of, served.lm)
            return Call(self, served, route, body, prompts, admitted_at)
        except BaseException:
            if served is not None:
                self.holder.release(served)
            self.gate.leave(sequences, admitted_at, decoded=False)
            raise


class Call:
    """One admitted request: its lease on the model, its place in the gate, its sequences (one per
    prompt and choice), and its log line. `events()` streams (choice, text piece, Generation|None);
    the Generation comes once per choice, last."""

    def __init__(self, server: Server, served: Served, route: str, body: SamplingRequest,
                 prompts: list[list[int]], admitted_at: float):
        self.server, self.served, self.route, self.body, self.prompts = server, served, route, body, prompts
        self.admitted_at = admitted_at
        self.id = uuid.uuid4().hex[:24]
        self.started = time.perf_counter()
        param = "messages" if route == "chat" else "prompt"
        self.max_new = [server.config.new_tokens(served.lm.max_context, len(ids), body.wanted_tokens, param)
                        for ids in prompts]
        self.generations: dict[int, Generation] = {}

    @property
    def fingerprint(self) -> str:
        return self.served.fingerprint(self.server.name)

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.prompts)

    def prompt_of(self, index: int) -> list[int]:
        """The prompt ids of choice `index` (choices are numbered prompt by prompt, n each)."""
        return self.prompts[index // self.body.n]

    def jobs(self) -> Iterator[Job]:
        for p, ids in enumerate(self.prompts):
            for i in range(self.body.n):
                yield p * self.body.n + i, ids, self.body.settings(self.max_new[p], i), self.max_new[p]

    async def events(self) -> AsyncIterator[Event]:
        async for index, piece, gen in decode(self.served.engine, self.jobs(), group=self.id):
            if gen is not None:
                self.generations[index] = gen
            yield index, piece, gen

    async def results(self) -> list[Generation]:
        async for _ in self.events():
            pass
        return [self.generations[i] for i in sorted(self.generations)]

    def usage(self) -> Usage:
        completion = sum(g.completion_tokens for g in self.generations.values())
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=completion,
                     total_tokens=self.prompt_tokens + completion)

    def end(self) -> None:
        """Give back the place in the gate and the lease on the model; log the request."""
        line = self.log_line()
        self.server.gate.leave(self.body.sequences, self.admitted_at)
        self.server.holder.release(self.served)
        log.info(line)

    def log_line(self) -> str:
        finish = ",".join(sorted({g.finish_reason for g in self.generations.values()})) or "none"
        line = (f"{self.route} {self.id} {self.fingerprint} prompt_tokens={self.prompt_tokens} "
                f"completion_tokens={self.usage().completion_tokens} finish={finish} "
                f"{time.perf_counter() - self.started:.3f}s")
        if self.server.config.log_prompts:
            line += " prompt=" + json.dumps([self.served.lm.tokenizer.decode(ids) for ids in self.prompts])
        return line
