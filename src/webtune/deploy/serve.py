"""An OpenAI-compatible endpoint for a run's model, or for a registered model's promoted version.

TARGET is a directory (a run directory, or a model directory; an existing directory wins) or a
registry name `NAME[@vN]`. A plain `NAME` follows the registry's pointer (`current.json`, replaced
atomically on promote/rollback): when it moves, requests already running finish on the old
version, new requests wait while the new one loads, then go to it. With `free_before_load` (the
default on a GPU) the old model is released before the new one loads, so two are never resident.

Generation is continuous batching (`batching.BatchEngine`): requests that arrive together decode
together, up to `max_concurrency` sequences per step; `queue_size` more requests wait; beyond, 429.
`max_tokens` is the default for a request that names none and the most one may ask for; a prompt
that leaves no room in the context is an OpenAI-shaped 400. Request logs carry counts and timings,
never the prompt text unless `log_prompts`.
"""
from __future__ import annotations

import asyncio
import gc
import hmac
import ipaddress
import json
import logging
import os
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, Request
from fastapi.sse import EventSourceResponse, format_sse_event

from webtune.deploy import registry as reg
from webtune.deploy.batching import BatchEngine
from webtune.deploy.generate import Generation, LocalModel, load_model, token_logprobs
from webtune.deploy.openai_api import (APIError, ChatRequest, CompletionRequest, _Sampling,
                                       install_error_handlers)
from webtune.errors import WebtuneError

log = logging.getLogger("uvicorn.error")  # next to uvicorn's own lines
DEFAULT_REGISTRY = "runs/registry"


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_env: Optional[str] = None   # env var holding the bearer key clients must send
    no_auth: bool = False               # allow a non-loopback host without a key, on purpose
    max_tokens: int = 512               # default for a request without max_tokens, and the most allowed
    max_concurrency: int = 32           # sequences decoding together (one batch)
    queue_size: int = 64                # requests waiting beyond those; more get 429
    threads: int = 0                    # torch threads of the decode thread (0: half the cores)
    log_prompts: bool = False           # put prompt text in the request log
    free_before_load: Optional[bool] = None  # release the old model before loading a new one (None: on GPU)


# ---------------------------------------------------------------- what is served
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
    lm: LocalModel
    engine: BatchEngine
    label: str
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def fingerprint(self, name: str) -> str:
        return f"{name}@{self.label}"


class ModelHolder:
    """The model being served, swapped when the source's pointer moves. `acquire`/`release` bracket
    every request, so a swap knows when the old version's requests have finished."""

    def __init__(self, source: ModelSource, config: ServeConfig):
        import torch

        self.source, self.config = source, config
        self.free_before_load = (torch.cuda.is_available() if config.free_before_load is None
                                 else config.free_before_load)
        self.served: Optional[Served] = None
        self.lock = asyncio.Lock()
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webtune-load")
        self.resident: "weakref.WeakSet[Any]" = weakref.WeakSet()  # loaded torch models still alive
        self.peak_resident = 0

    def load(self, label: str, model_dir: Path) -> Served:
        lm = load_model(model_dir)
        gc.collect()
        self.resident.add(lm.model)
        self.peak_resident = max(self.peak_resident, len(self.resident))
        engine = BatchEngine(lm, self.config.max_concurrency, self.config.threads)
        log.info("serving %s %s from %s", self.source.name, label, model_dir)
        return Served(lm, engine, label)

    async def acquire(self) -> Served:
        label, model_dir = self.source.current()
        if self.served is None or self.served.label != label:
            async with self.lock:  # one swap at a time; requests arriving meanwhile wait here
                if self.served is None or self.served.label != label:
                    await self._swap(label, model_dir)
        self.served.users += 1
        self.served.idle.clear()
        return self.served

    def release(self, served: Served) -> None:
        served.users -= 1
        if served.users == 0:
            served.idle.set()

    async def _swap(self, label: str, model_dir: Path) -> None:
        loop = asyncio.get_running_loop()
        old, self.served = self.served, None
        if old is not None and self.free_before_load:
            await self._retire(old)
            old = None
            _free_memory()
        try:
            self.served = await loop.run_in_executor(self.loader, self.load, label, model_dir)
        except Exception:
            self.served = old  # keep answering with the old version (None if it was freed first)
            raise
        if old is not None:
            asyncio.get_running_loop().create_task(self._retire(old))

    @staticmethod
    async def _retire(old: Served) -> None:
        """Let the old version's requests finish, then stop its engine."""
        if old.users:
            await old.idle.wait()
        await asyncio.get_running_loop().run_in_executor(None, old.engine.close)
        old.engine.lm = None
        old.lm = None

    def close(self) -> None:
        if self.served is not None:
            self.served.engine.close()


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Gate:
    """At most `limit` requests admitted (running or queued); beyond that, 429."""

    def __init__(self, limit: int):
        self.limit, self.admitted = limit, 0

    def admit(self) -> None:
        if self.admitted >= self.limit:
            raise APIError(429, "Too many requests: all generation slots and the queue are full; retry "
                                "shortly", type="requests", code="rate_limit_exceeded")
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1


# ---------------------------------------------------------------- one request
class Call:
    """One admitted request: its lease on the model, its place in the gate, its sequences (one per
    prompt and choice), and its log line. `events()` streams (choice, text piece, Generation|None);
    the Generation comes once per choice, last."""

    def __init__(self, app: FastAPI, served: Served, route: str, body: _Sampling, prompts: list[list[int]]):
        self.state, self.served, self.route, self.body, self.prompts = app.state, served, route, body, prompts
        self.id = uuid.uuid4().hex[:24]
        self.started = time.perf_counter()
        self.max_new = [self.state.limits(served.lm, len(ids), body.wanted_tokens,
                                          "messages" if route == "chat" else "prompt") for ids in prompts]
        self.generations: dict[int, Generation] = {}
        self.state.gate.admit()

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for ids in self.prompts)

    def jobs(self):
        for p, ids in enumerate(self.prompts):
            for i in range(self.body.n):
                yield p * self.body.n + i, ids, self.body.settings(self.max_new[p], i), self.max_new[p]

    async def events(self) -> AsyncIterator[tuple[int, str, Optional[Generation]]]:
        loop, inbox = asyncio.get_running_loop(), asyncio.Queue()

        def emitter(index: int):
            def emit(piece: str, gen: Any) -> None:
                try:
                    loop.call_soon_threadsafe(inbox.put_nowait, (index, piece, gen))
                except RuntimeError:  # the event loop is gone (server shutting down)
                    pass
            return emit

        seqs = [self.served.engine.submit(ids, settings, max_new, emitter(index))
                for index, ids, settings, max_new in self.jobs()]
        try:
            while len(self.generations) < len(seqs):
                index, piece, gen = await inbox.get()
                if isinstance(gen, BaseException):
                    raise gen
                if gen is not None:
                    self.generations[index] = gen
                yield index, piece, gen
        finally:
            for seq in seqs:
                seq.cancel()

    async def results(self) -> list[Generation]:
        async for _ in self.events():
            pass
        return [self.generations[i] for i in sorted(self.generations)]

    def usage(self) -> dict:
        completion = sum(g.completion_tokens for g in self.generations.values())
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def end(self, holder: ModelHolder) -> None:
        self.state.gate.leave()
        holder.release(self.served)
        finish = ",".join(sorted({g.finish_reason for g in self.generations.values()})) or "none"
        line = (f"{self.route} {self.id} {self.served.fingerprint(self.state.name)} "
                f"prompt_tokens={self.prompt_tokens} completion_tokens={self.usage()['completion_tokens']} "
                f"finish={finish} {time.perf_counter() - self.started:.3f}s")
        if self.state.config.log_prompts:
            line += " prompt=" + json.dumps([self.served.lm.tokenizer.decode(ids) for ids in self.prompts])
        log.info(line)


def _limits(config: ServeConfig):
    def check(lm: LocalModel, prompt_len: int, wanted: Optional[int], param: str) -> int:
        """New tokens for one prompt: the request's max_tokens, or the server's default; 400s."""
        if wanted is not None and wanted > config.max_tokens:
            raise APIError(400, f"max_tokens is {wanted}, more than this server allows ({config.max_tokens}, "
                                f"`webtune serve --max-tokens`); ask for fewer", param="max_tokens")
        room = lm.max_context - prompt_len
        if room <= 0 or (wanted is not None and wanted > room):
            raise APIError(400, f"This model's maximum context length is {lm.max_context} tokens; the prompt "
                                f"has {prompt_len} tokens and max_tokens is {wanted if wanted is not None else 'unset'}"
                                f"; shorten the prompt or lower max_tokens", param=param,
                           code="context_length_exceeded")
        return min(config.max_tokens, room) if wanted is None else wanted
    return check


# ---------------------------------------------------------------- the app
def create_app(target: str | Path, registry: str | Path = DEFAULT_REGISTRY,
               config: Optional[ServeConfig] = None) -> FastAPI:
    """The OpenAI-compatible app serving TARGET (see the module doc). Loads the model now, so a bad
    target fails at start, not on the first request."""
    config = config or ServeConfig()
    api_key = _api_key(config)
    source = ModelSource.parse(target, registry)
    holder = ModelHolder(source, config)
    holder.served = holder.load(*source.current())
    app = FastAPI(title="webtune", docs_url=None, redoc_url=None)
    app.state.holder, app.state.gate, app.state.config = holder, Gate(config.max_concurrency + config.queue_size), config
    app.state.name, app.state.limits = source.name, _limits(config)
    app.router.add_event_handler("shutdown", holder.close)
    install_error_handlers(app)
    _add_auth(app, api_key)
    _add_routes(app)
    return app


def _api_key(config: ServeConfig) -> Optional[str]:
    if config.api_key_env:
        key = os.environ.get(config.api_key_env)
        if not key:
            raise WebtuneError(f"--api-key-env names {config.api_key_env}, but it is not set; export it, or "
                               f"leave --api-key-env out on 127.0.0.1")
        return key
    if not _is_loopback(config.host) and not config.no_auth:
        raise WebtuneError(f"--host {config.host} would serve to the network without an API key; set "
                           f"--api-key-env ENV (clients send `Authorization: Bearer $ENV`), or pass --no-auth "
                           f"on purpose")
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _add_auth(app: FastAPI, api_key: Optional[str]) -> None:
    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return APIError(401, "Incorrect API key provided", code="invalid_api_key").response()
        return await call_next(request)


def _add_routes(app: FastAPI) -> None:
    state = app.state
    holder: ModelHolder = state.holder

    async def open_call(route: str, body: _Sampling, prompts_of) -> Call:
        if body.model != state.name:
            raise APIError(404, f"The model `{body.model}` does not exist; this server serves `{state.name}`",
                           param="model", code="model_not_found")
        served = await holder.acquire()
        try:
            return Call(app, served, route, body, prompts_of(served.lm))
        except BaseException:
            holder.release(served)
            raise

    @app.get("/health")
    async def health():
        served = holder.served
        return {"status": "ok", "model": state.name, "version": served.label if served else None,
                "admitted": state.gate.admitted, "resident_models": len(holder.resident),
                "peak_resident_models": holder.peak_resident}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(holder)]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        if model_id != state.name:
            raise APIError(404, f"The model `{model_id}` does not exist; this server serves `{state.name}`",
                           param="model", code="model_not_found")
        return _model_card(holder)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        call = await open_call("chat", body, lambda lm: [_chat_ids(lm, body)])
        if body.stream:
            return await _stream(call, holder, _chat_chunks(call, state.name))
        return await _respond(call, holder, lambda: _chat_response(call, state.name))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        if body.stream and body.logprobs is not None:
            raise APIError(400, "logprobs with stream is not supported; send stream: false", param="logprobs")
        call = await open_call("completion", body, lambda lm: _prompt_token_lists(lm, body.prompt))
        if body.stream:
            return await _stream(call, holder, _completion_chunks(call, state.name))
        return await _respond(call, holder, lambda: _completion_response(call, state.name))


async def _respond(call: Call, holder: ModelHolder, build) -> dict:
    try:
        await call.results()
        return await build()
    finally:
        call.end(holder)


async def _stream(call: Call, holder: ModelHolder, chunks: AsyncIterator[bytes]) -> EventSourceResponse:
    async def body():
        try:
            async for chunk in chunks:
                yield chunk
            yield format_sse_event(data_str="[DONE]")
        except Exception as e:  # headers are sent: report in-band, as OpenAI does
            log.exception("stream failed")
            err = {"error": {"message": f"generation failed: {type(e).__name__}", "type": "server_error",
                             "param": None, "code": None}}
            yield format_sse_event(data_str=json.dumps(err))
        finally:
            call.end(holder)
    return EventSourceResponse(await _started(body()))


async def _started(stream):
    """Run a stream up to its first event now. A generator that never started would never run its
    `finally` (which frees its place in the gate and its lease) if the client left before the body
    was sent; a started one is closed by asyncio when dropped, so its `finally` always runs."""
    first = await stream.__anext__()

    async def rest():
        yield first
        async for event in stream:
            yield event
    return rest()


def _sse(data: dict) -> bytes:
    return format_sse_event(data_str=json.dumps(data))


def _base(call: Call, name: str, prefix: str) -> dict:
    return {"id": f"{prefix}-{call.id}", "created": int(time.time()), "model": name,
            "system_fingerprint": call.served.fingerprint(name)}


def _model_card(holder: ModelHolder) -> dict:
    _, model_dir = holder.source.current()
    return {"id": holder.source.name, "object": "model", "created": int(model_dir.stat().st_mtime),
            "owned_by": "webtune"}


# ---------------------------------------------------------------- chat
def _chat_ids(lm: LocalModel, body: ChatRequest) -> list[int]:
    try:
        return lm.chat_prompt_ids([m.as_template_message() for m in body.messages])
    except Exception as e:  # e.g. a template that demands alternating user/assistant turns
        raise APIError(400, f"the model's chat template rejected the messages: {e}", param="messages") from None


async def _chat_response(call: Call, name: str) -> dict:
    gens = [call.generations[i] for i in sorted(call.generations)]
    return {**_base(call, name, "chatcmpl"), "object": "chat.completion",
            "choices": [{"index": i, "message": {"role": "assistant", "content": g.text, "refusal": None},
                         "logprobs": None, "finish_reason": g.finish_reason} for i, g in enumerate(gens)],
            "usage": call.usage()}


async def _chat_chunks(call: Call, name: str) -> AsyncIterator[bytes]:
    base = {**_base(call, name, "chatcmpl"), "object": "chat.completion.chunk"}

    def chunk(choice: int, delta: dict, finish: Optional[str] = None) -> bytes:
        return _sse({**base, "choices": [{"index": choice, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}]})
    for i in range(call.body.n):
        yield chunk(i, {"role": "assistant", "content": ""})
    async for index, piece, gen in call.events():
        if piece:
            yield chunk(index, {"content": piece})
        if gen is not None:
            yield chunk(index, {}, gen.finish_reason)
    if call.body.stream_options and call.body.stream_options.include_usage:
        yield _sse({**base, "choices": [], "usage": call.usage()})


# ---------------------------------------------------------------- completions
def _prompt_token_lists(lm: LocalModel, prompt: Any) -> list[list[int]]:
    """OpenAI's four prompt shapes (text, texts, token ids, lists of token ids) -> token id lists."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    out = []
    vocab = len(lm.tokenizer)
    for i, p in enumerate(prompt):
        ids = lm.encode(p) if isinstance(p, str) else list(p)
        if not ids:
            raise APIError(400, f"prompt {i} is empty", param="prompt")
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"prompt {i} has token id {bad[0]} outside the vocabulary (0..{vocab - 1})",
                           param="prompt")
        out.append(ids)
    return out


async def _completion_response(call: Call, name: str) -> dict:
    body, lm = call.body, call.served.lm
    loop = asyncio.get_running_loop()
    choices = []
    for index in sorted(call.generations):
        ids, gen = call.prompts[index // body.n], call.generations[index]
        logprobs = None
        if body.logprobs is not None:
            logprobs = await loop.run_in_executor(None, _logprobs, lm, ids, gen, body)
        echo = lm.decode(ids) if body.echo else ""
        choices.append({"index": index, "text": echo + gen.text, "logprobs": logprobs,
                        "finish_reason": gen.finish_reason})
    return {**_base(call, name, "cmpl"), "object": "text_completion", "choices": choices, "usage": call.usage()}


def _logprobs(lm: LocalModel, ids: list[int], gen: Generation, body: CompletionRequest) -> dict:
    """Logprobs over the echoed prompt and/or the completion, in one forward pass over both
    (what lm-evaluation-harness sums for log-likelihood tasks)."""
    scored = token_logprobs(lm, ids + gen.token_ids, top=body.logprobs)
    if not body.echo:
        scored = scored[len(ids):]
    offsets, pos = [], 0
    for t in scored:
        offsets.append(pos)
        pos += len(t.token)
    return {"tokens": [t.token for t in scored], "token_logprobs": [t.logprob for t in scored],
            "top_logprobs": [t.top if t.logprob is not None else None for t in scored], "text_offset": offsets}


async def _completion_chunks(call: Call, name: str) -> AsyncIterator[bytes]:
    base = {**_base(call, name, "cmpl"), "object": "text_completion"}

    def chunk(index: int, text: str, finish: Optional[str] = None) -> bytes:
        return _sse({**base, "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]})
    yield format_sse_event(comment="webtune")  # something to send before the first token: see _started
    if call.body.echo:
        for index, _, _, _ in call.jobs():
            yield chunk(index, call.served.lm.decode(call.prompts[index // call.body.n]))
    async for index, piece, gen in call.events():
        if piece:
            yield chunk(index, piece)
        if gen is not None:
            yield chunk(index, "", gen.finish_reason)


# ---------------------------------------------------------------- running it
def serve(target: str | Path, registry: str | Path = DEFAULT_REGISTRY, config: Optional[ServeConfig] = None) -> None:
    """Run the endpoint with uvicorn until interrupted."""
    import uvicorn

    config = config or ServeConfig()
    app = create_app(target, registry, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
