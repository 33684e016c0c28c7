"""An OpenAI-compatible endpoint for a run's model, or for a registered model's promoted version.

TARGET is a directory (a run directory, or a model directory; an existing directory wins) or a
registry name `NAME[@vN]`. A plain `NAME` follows the registry's pointer (`current.json`, replaced
atomically on promote/rollback): when it moves, requests already running finish on the old
version, new requests wait while the new one loads, then go to it. With `free_before_load` (the
default on a GPU) the old model is released before the new one loads, so two are never resident.

Generation is continuous batching (`batching.BatchEngine`): requests that arrive together decode
together, up to `max_concurrency` sequences per step; `queue_size` more sequences wait; beyond,
429 with Retry-After. A request counts prompts x n sequences, at most `max_request_sequences` (else
400), and free slots go round-robin by request; a body over `max_body_bytes` is a 413 unparsed.
`max_tokens` is the default for a request that names none and the most one may ask for; a prompt
that leaves no room in the context is an OpenAI-shaped 400. Request logs carry counts and timings,
never the prompt text unless `log_prompts`.

Where things are: this module builds the app (key, state, routes); `serve_routes` has one handler
per route; `openai_api` the request and response shapes and errors; `serve_state` the app's state
and one request's lifetime; `serve_model` what is served and the hot swap; `serve_engine` the
engine interface.
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import FastAPI

from webtune.deploy.generate import LocalModel, load_model
from webtune.deploy.openai_api import APIError, BodyLimit, install_error_handlers
from webtune.deploy.serve_engine import EngineFactory, batch_engine
from webtune.deploy.serve_model import DEFAULT_REGISTRY, ModelHolder, ModelSource, gpu_present
from webtune.deploy.serve_routes import router
from webtune.deploy.serve_state import Gate, ServeConfig, Server
from webtune.errors import WebtuneError
from webtune.redaction import secret_env

__all__ = ["DEFAULT_REGISTRY", "ServeConfig", "create_app", "serve"]
log = logging.getLogger("uvicorn.error")


def create_app(target: str | Path, registry: str | Path = DEFAULT_REGISTRY,
               config: Optional[ServeConfig] = None, make_engine: Optional[EngineFactory] = None) -> FastAPI:
    """The OpenAI-compatible app serving TARGET (see the module doc). Loads the model now, so a bad
    target fails at start, not on the first request. `make_engine` (default: a BatchEngine per
    loaded model) is what decodes."""
    config = config or ServeConfig()
    api_key = api_key_of(config)
    source = ModelSource.parse(target, registry)
    free_first = gpu_present() if config.free_before_load is None else config.free_before_load
    load_lm, close = load_model, None
    if make_engine is None and engine_of(config) == "vllm":  # vLLM decodes in its own process
        from webtune.deploy import vllm_engine

        pool = vllm_engine.VllmPool(config.vllm or vllm_engine.VllmSettings())
        make_engine, load_lm, close = pool.factory(source.name), vllm_engine.load_front, pool.close
    make_engine = make_engine or batch_engine(config.max_concurrency, config.threads)
    holder = ModelHolder(source, make_engine, free_first, with_system(load_lm, config.system))
    try:
        holder.served = holder.load(*source.current())
    except BaseException:
        if close:
            close()
        raise
    app = FastAPI(title="webtune", docs_url=None, redoc_url=None)
    app.state.server = Server(source.name, config, holder, Gate(config.max_concurrency + config.queue_size),
                              api_key)
    app.router.add_event_handler("shutdown", app.state.server.close)
    if close:
        app.state.vllm_pool = pool
        app.router.add_event_handler("shutdown", close)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # inside the key check: no key, no read
    app.add_middleware(RequireKey)
    app.include_router(router)
    return app


def engine_of(config: ServeConfig) -> str:
    """The engine `config.engine` names; `auto` is vLLM when its environment is found, and says so."""
    if config.engine not in ("transformers", "vllm", "auto"):
        raise WebtuneError(f"--engine {config.engine} is unknown; use transformers, vllm or auto")
    if config.engine != "auto":
        return config.engine
    from webtune.deploy.vllm_engine import find_vllm

    found = find_vllm(getattr(config.vllm, "command", None))
    log.info("--engine auto: %s", f"vLLM ({found})" if found else "transformers (no vLLM found: `make vllm`)")
    return "vllm" if found else "transformers"


def with_system(load_lm: Callable[[Path], LocalModel], system: Optional[str]) -> Callable[[Path], LocalModel]:
    """The loader, with `--system` (if given) as the system prompt of requests that send none."""
    if system is None:
        return load_lm

    def load(path: Path) -> LocalModel:
        lm = load_lm(path)
        lm.default_system = system or None  # --system "": no system prompt at all
        return lm
    return load


def api_key_of(config: ServeConfig) -> Optional[str]:
    """The bearer key clients must send (from the env var `--api-key-env` names), or None; refuses a
    network host without one unless `--no-auth`."""
    if config.api_key_env:
        key = secret_env(config.api_key_env)
        if not key:
            raise WebtuneError(f"--api-key-env names {config.api_key_env}, but it is not set; export it, or "
                               f"leave --api-key-env out on 127.0.0.1")
        return key
    if not is_loopback(config.host) and not config.no_auth:
        raise WebtuneError(f"--host {config.host} would serve to the network without an API key; set "
                           f"--api-key-env ENV (clients send `Authorization: Bearer $ENV`), or pass --no-auth "
                           f"on purpose")
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequireKey:
    """ASGI middleware: every /v1/ request carries `Authorization: Bearer KEY` when the server has a
    key. Plain ASGI, not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware passes every
    streamed chunk through a task and a memory stream (~40 us a chunk, each token of each stream)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        api_key = scope["app"].state.server.api_key if scope["type"] == "http" else None
        if api_key and scope["path"].startswith("/v1/"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {api_key}".encode()):
                response = APIError(401, "Incorrect API key provided", code="invalid_api_key").response()
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def serve(target: str | Path, registry: str | Path = DEFAULT_REGISTRY, config: Optional[ServeConfig] = None) -> None:
    """Run the endpoint with uvicorn until interrupted."""
    import uvicorn

    config = config or ServeConfig()
    app = create_app(target, registry, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
