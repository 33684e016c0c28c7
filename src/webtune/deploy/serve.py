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
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request

from webtune.deploy.openai_api import APIError, BodyLimit, install_error_handlers
from webtune.deploy.serve_engine import EngineFactory, batch_engine
from webtune.deploy.serve_model import DEFAULT_REGISTRY, ModelHolder, ModelSource, gpu_present
from webtune.deploy.serve_routes import router
from webtune.deploy.serve_state import Gate, ServeConfig, Server
from webtune.errors import WebtuneError
from webtune.redaction import secret_env

__all__ = ["DEFAULT_REGISTRY", "ServeConfig", "create_app", "serve"]


def create_app(target: str | Path, registry: str | Path = DEFAULT_REGISTRY,
               config: Optional[ServeConfig] = None, make_engine: Optional[EngineFactory] = None) -> FastAPI:
    """The OpenAI-compatible app serving TARGET (see the module doc). Loads the model now, so a bad
    target fails at start, not on the first request. `make_engine` (default: a BatchEngine per
    loaded model) is what decodes."""
    config = config or ServeConfig()
    api_key = api_key_of(config)
    source = ModelSource.parse(target, registry)
    free_first = gpu_present() if config.free_before_load is None else config.free_before_load
    make_engine = make_engine or batch_engine(config.max_concurrency, config.threads)
    holder = ModelHolder(source, make_engine, free_first)
    holder.served = holder.load(*source.current())
    app = FastAPI(title="webtune", docs_url=None, redoc_url=None)
    app.state.server = Server(source.name, config, holder, Gate(config.max_concurrency + config.queue_size),
                              api_key)
    app.router.add_event_handler("shutdown", app.state.server.close)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)  # inside the key check: no key, no read
    app.middleware("http")(require_key)
    app.include_router(router)
    return app


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


async def require_key(request: Request, call_next):
    """Middleware: every /v1/ request carries `Authorization: Bearer KEY` when the server has a key."""
    api_key = request.app.state.server.api_key
    if api_key and request.url.path.startswith("/v1/"):
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return APIError(401, "Incorrect API key provided", code="invalid_api_key").response()
    return await call_next(request)


def serve(target: str | Path, registry: str | Path = DEFAULT_REGISTRY, config: Optional[ServeConfig] = None) -> None:
    """Run the endpoint with uvicorn until interrupted."""
    import uvicorn

    config = config or ServeConfig()
    app = create_app(target, registry, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level="info")
