"""An OpenAI-compatible endpoint for the promoted version of a registered model.

`create_app` builds the FastAPI app, `serve` runs it with uvicorn. Each request reads the
registry's pointer (`current.json`, replaced atomically on promote/rollback); when it names a new
version, the new model is loaded and then swapped in, while requests already running finish on
the model they started with. Generation runs in a thread pool of `max_concurrency` threads, so
the event loop stays free; up to `queue_size` more requests wait for a slot, beyond that 429.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from webtune.deploy import registry as reg
from webtune.deploy.generate import (GenerationSettings, LocalModel, astream, check_context, generate,
                                     load_model, token_logprobs)
from webtune.errors import WebtuneError

log = logging.getLogger("uvicorn.error")  # next to uvicorn's own lines


# ---------------------------------------------------------------- errors
class APIError(Exception):
    """An error sent to the client as OpenAI's `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status)


# ---------------------------------------------------------------- request shapes
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart]]
    name: Optional[str] = None

    def as_template_message(self) -> dict[str, str]:
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=8)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # accepted so clients that always send them work; anything but the neutral value is refused
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @field_validator("presence_penalty", "frequency_penalty")
    @classmethod
    def _no_penalty(cls, v):
        if v != 0:
            raise ValueError("penalties are not supported by this server; send 0 or leave it out")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v):
        if v:
            raise ValueError("logit_bias is not supported by this server")
        return v

    def settings(self, max_tokens: Optional[int], choice: int) -> GenerationSettings:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        seed = None if self.seed is None else self.seed + choice
        return GenerationSettings(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                                  stop=stops, seed=seed)


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Optional[bool] = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v:
            raise ValueError("chat logprobs are not supported; use /v1/completions with logprobs")
        return v


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    best_of: Optional[int] = Field(None, ge=1, le=1)
    suffix: Optional[str] = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v):
        if v:
            raise ValueError("suffix is not supported by this server")
        return v


# ---------------------------------------------------------------- the served model
@dataclass
class Served:
    lm: LocalModel
    version: int

    def fingerprint(self, name: str) -> str:
        return f"{name}@v{self.version}"


class ModelHolder:
    """The promoted version, reloaded when the registry's pointer moves."""

    def __init__(self, registry: Path, name: str):
        self.registry, self.name = registry, name
        self.served: Optional[Served] = None
        self.lock = asyncio.Lock()
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webtune-load")

    def promoted_version(self) -> int:
        cur = reg.read_current(self.registry, self.name)
        if cur is None:
            raise WebtuneError(f"{self.name} has no promoted version in {self.registry}; "
                               f"run `webtune models promote {self.name} N` first")
        return cur["version"]

    def load(self, version: int) -> Served:
        vdir = self.registry / self.name / f"v{version}"
        if (vdir / "openai_model.json").exists():
            raise WebtuneError(f"{self.name} v{version} is an OpenAI model; it is served by OpenAI, "
                               f"not by `webtune serve`")
        return Served(load_model(vdir / "model"), version)

    async def get(self) -> Served:
        version = self.promoted_version()
        if self.served is None or self.served.version != version:
            async with self.lock:  # one load at a time; later requests wait for it, then reuse it
                if self.served is None or self.served.version != version:
                    loop = asyncio.get_running_loop()
                    self.served = await loop.run_in_executor(self.loader, self.load, version)
                    log.info("serving %s v%d", self.name, version)
        return self.served


class Gate:
    """At most `slots` requests generate; `queue` more wait; beyond that, 429."""

    def __init__(self, slots: int, queue: int):
        self.sem = asyncio.Semaphore(slots)
        self.limit = slots + queue
        self.admitted = 0

    def admit(self) -> None:
        if self.admitted >= self.limit:
            raise APIError(429, "Too many requests: all generation slots and the queue are full; retry "
                                "shortly", type="requests", code="rate_limit_exceeded")
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1


# ---------------------------------------------------------------- the app
def create_app(registry_path: str | Path, name: str, api_key_env: Optional[str] = None,
               max_concurrency: int = 4, queue_size: int = 64, threads: int = 0) -> FastAPI:
    """The OpenAI-compatible app serving the promoted version of `name` from the registry.
    `threads`: torch intra-op threads per generation thread (0: cores / max_concurrency, at least 1)."""
    registry_path = Path(registry_path)
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise WebtuneError(f"serve.api_key_env names {api_key_env}, but it is not set; export it, "
                               f"or leave serve.api_key_env empty for no key")
    import torch

    holder = ModelHolder(registry_path, name)
    holder.served = holder.load(holder.promoted_version())  # fail at start, not on the first request
    # Concurrent requests are the parallelism; OpenMP teams that oversubscribe the cores make
    # every token wait on spinning threads (20x slower on a busy 2-core machine in bench/serve.py).
    threads = threads or max(1, (os.cpu_count() or 1) // max_concurrency)
    pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="webtune-gen",
                              initializer=torch.set_num_threads, initargs=(threads,))
    gate = Gate(max_concurrency, queue_size)
    app = FastAPI(title="webtune", docs_url=None, redoc_url=None)
    app.state.holder, app.state.gate = holder, gate

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        err = exc.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        # pydantic names each union branch in the path; the client only needs the field
        loc = [p for p in loc if p not in ("str", "int", "float", "bool", "none")
               and not p.startswith(("list[", "dict[", "function-", "literal[", "nullable["))]
        msg = err.get("msg", "invalid request")
        if err.get("type") == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {loc[-1] if loc else '?'}"
        elif err.get("type") == "json_invalid":
            msg = "The request body is not valid JSON"
        return APIError(400, msg, param=".".join(loc) or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return APIError(exc.status_code, str(exc.detail), code=None).response()

    @app.exception_handler(WebtuneError)
    async def _webtune_error(request: Request, exc: WebtuneError):
        return APIError(503, str(exc), type="server_error").response()

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("request failed")
        return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return APIError(401, "Incorrect API key provided", code="invalid_api_key").response()
        return await call_next(request)

    def model_card(served: Served) -> dict:
        vdir = registry_path / name / f"v{served.version}"
        return {"id": name, "object": "model", "created": int(vdir.stat().st_mtime), "owned_by": "webtune"}

    async def served_for(model: str) -> Served:
        if model != name:
            raise APIError(404, f"The model `{model}` does not exist; this server serves `{name}`",
                           param="model", code="model_not_found")
        return await holder.get()

    def prompt_ids_checked(lm: LocalModel, ids: list[int], max_tokens: Optional[int]) -> None:
        try:
            check_context(lm, len(ids), max_tokens)
        except WebtuneError as e:
            raise APIError(400, str(e), param="messages", code="context_length_exceeded") from None

    @app.get("/health")
    async def health():
        served = holder.served
        return {"status": "ok", "model": name, "version": served.version if served else None,
                "admitted": gate.admitted}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(await holder.get())]}

    @app.get("/v1/models/{model_id}")
    async def model(model_id: str):
        return model_card(await served_for(model_id))

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        served = await served_for(body.model)
        lm = served.lm
        try:
            ids = lm.chat_prompt_ids([m.as_template_message() for m in body.messages])
        except Exception as e:  # e.g. a template that demands alternating user/assistant turns
            raise APIError(400, f"the model's chat template rejected the messages: {e}",
                           param="messages") from None
        max_tokens = body.max_completion_tokens or body.max_tokens
        prompt_ids_checked(lm, ids, max_tokens)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": name,
                "system_fingerprint": served.fingerprint(name)}
        gate.admit()
        if body.stream:
            return EventSourceResponse(await _started(_chat_stream(body, lm, ids, max_tokens, base)))
        try:
            async with gate.sem:
                gens = [await run(generate, lm, ids, body.settings(max_tokens, i)) for i in range(body.n)]
        finally:
            gate.leave()
        return {**base, "object": "chat.completion",
                "choices": [{"index": i, "message": {"role": "assistant", "content": g.text, "refusal": None},
                             "logprobs": None, "finish_reason": g.finish_reason} for i, g in enumerate(gens)],
                "usage": _usage(len(ids), sum(g.completion_tokens for g in gens))}

    async def _chat_stream(body: ChatRequest, lm: LocalModel, ids: list[int], max_tokens, base: dict):
        def chunk(choice: int, delta: dict, finish: Optional[str] = None, **extra) -> bytes:
            data = {**base, "object": "chat.completion.chunk", **extra,
                    "choices": [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            return format_sse_event(data_str=json.dumps(data))
        try:
            yield chunk(0, {"role": "assistant", "content": ""})  # before queueing: see _started
            async with gate.sem:
                completion_tokens = 0
                for i in range(body.n):
                    if i:
                        yield chunk(i, {"role": "assistant", "content": ""})
                    result: list = []
                    async for piece in astream(lm, ids, body.settings(max_tokens, i), pool, result):
                        yield chunk(i, {"content": piece})
                    completion_tokens += result[0].completion_tokens
                    yield chunk(i, {}, result[0].finish_reason)
                if body.stream_options and body.stream_options.include_usage:
                    usage = {**base, "object": "chat.completion.chunk", "choices": [],
                             "usage": _usage(len(ids), completion_tokens)}
                    yield format_sse_event(data_str=json.dumps(usage))
            yield format_sse_event(data_str="[DONE]")
        except Exception as e:  # headers are sent: report in-band, as OpenAI does
            log.exception("stream failed")
            err = {"error": {"message": f"generation failed: {type(e).__name__}", "type": "server_error",
                             "param": None, "code": None}}
            yield format_sse_event(data_str=json.dumps(err))
        finally:
            gate.leave()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        served = await served_for(body.model)
        lm = served.lm
        prompts = _prompt_token_lists(lm, body.prompt)
        for ids in prompts:
            prompt_ids_checked(lm, ids, body.max_tokens)
        if body.stream and (body.logprobs is not None):
            raise APIError(400, "logprobs with stream is not supported; send stream: false",
                           param="logprobs")
        base = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": name,
                "system_fingerprint": served.fingerprint(name), "object": "text_completion"}
        gate.admit()
        if body.stream:
            return EventSourceResponse(await _started(_completion_stream(body, lm, prompts, base)))
        try:
            async with gate.sem:
                choices, completion_tokens = [], 0
                for p, ids in enumerate(prompts):
                    for i in range(body.n):
                        choice = await run(_completion_choice, lm, ids, body, i)
                        completion_tokens += choice.pop("_tokens")
                        choices.append({**choice, "index": p * body.n + i})
        finally:
            gate.leave()
        return {**base, "choices": choices,
                "usage": _usage(sum(len(ids) for ids in prompts), completion_tokens)}

    async def _completion_stream(body: CompletionRequest, lm: LocalModel, prompts: list[list[int]], base: dict):
        def chunk(index: int, text: str, finish: Optional[str] = None) -> bytes:
            data = {**base, "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}
            return format_sse_event(data_str=json.dumps(data))
        try:
            yield format_sse_event(comment="webtune")  # before queueing: see _started
            async with gate.sem:
                for p, ids in enumerate(prompts):
                    for i in range(body.n):
                        index = p * body.n + i
                        if body.echo:
                            yield chunk(index, lm.tokenizer.decode(ids, skip_special_tokens=True))
                        result: list = []
                        async for piece in astream(lm, ids, body.settings(body.max_tokens, i), pool, result):
                            yield chunk(index, piece)
                        yield chunk(index, "", result[0].finish_reason)
            yield format_sse_event(data_str="[DONE]")
        except Exception as e:
            log.exception("stream failed")
            err = {"error": {"message": f"generation failed: {type(e).__name__}", "type": "server_error",
                             "param": None, "code": None}}
            yield format_sse_event(data_str=json.dumps(err))
        finally:
            gate.leave()

    return app


async def _started(stream):
    """Run a stream up to its first event now. A generator that never started would never run its
    `finally` (which frees its place in the gate) if the client left before the body was sent;
    a started one is closed by asyncio when dropped, so its `finally` always runs."""
    first = await stream.__anext__()

    async def rest():
        yield first
        async for event in stream:
            yield event
    return rest()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


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


def _completion_choice(lm: LocalModel, ids: list[int], body: CompletionRequest, choice: int) -> dict:
    """One /v1/completions choice (runs in the generation pool): text, and logprobs over the echoed
    prompt and/or the completion, computed in one forward pass over both."""
    gen = generate(lm, ids, body.settings(body.max_tokens, choice))
    prompt_text = lm.tokenizer.decode(ids, skip_special_tokens=True) if body.echo else ""
    logprobs = None
    if body.logprobs is not None:
        scored = token_logprobs(lm, ids + gen.token_ids, top=body.logprobs)
        if not body.echo:
            scored = scored[len(ids):]
        offsets, pos = [], 0
        for t in scored:
            offsets.append(pos)
            pos += len(t.token)
        logprobs = {"tokens": [t.token for t in scored], "token_logprobs": [t.logprob for t in scored],
                    "top_logprobs": [t.top if t.logprob is not None else None for t in scored],
                    "text_offset": offsets}
    return {"text": prompt_text + gen.text, "logprobs": logprobs, "finish_reason": gen.finish_reason,
            "_tokens": gen.completion_tokens}


def serve(registry_path: str | Path, name: str, host: str = "127.0.0.1", port: int = 8000,
          api_key_env: Optional[str] = None, max_concurrency: int = 4, queue_size: int = 64,
          engine: str = "hf", threads: int = 0) -> None:
    """Run the endpoint with uvicorn until interrupted."""
    import uvicorn

    if engine == "vllm":
        raise WebtuneError("serve.engine=vllm needs vLLM, which is not installed here; install vllm on a "
                           "GPU machine, or use serve.engine=hf")
    if engine != "hf":
        raise WebtuneError(f"serve.engine={engine} is unknown; use hf or vllm")
    app = create_app(registry_path, name, api_key_env, max_concurrency, queue_size, threads)
    uvicorn.run(app, host=host, port=port, log_level="info")


def main(argv: Optional[list[str]] = None) -> None:
    """`python -m webtune.deploy.serve REGISTRY NAME [--port N]` (the CLI's `webtune serve` wraps serve())."""
    import argparse

    ap = argparse.ArgumentParser(prog="webtune serve")
    ap.add_argument("registry")
    ap.add_argument("name")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--api-key-env")
    ap.add_argument("--max-concurrency", type=int, default=4)
    ap.add_argument("--queue-size", type=int, default=64)
    ap.add_argument("--engine", default="hf")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        serve(a.registry, a.name, a.host, a.port, a.api_key_env, a.max_concurrency, a.queue_size, a.engine,
              a.threads)
    except WebtuneError as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
