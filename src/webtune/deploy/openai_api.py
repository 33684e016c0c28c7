"""The OpenAI wire shapes `webtune serve` speaks: request models (unknown fields refused, as
OpenAI does), `APIError` as `{"error": {message, type, param, code}}`, and the handlers that turn
every failure into that shape."""
from __future__ import annotations

import logging
from typing import Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from webtune.deploy.generate import GenerationSettings
from webtune.errors import WebtuneError

log = logging.getLogger("uvicorn.error")


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

    @property
    def wanted_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v):
        if v:
            raise ValueError("chat logprobs are not supported; use /v1/completions with logprobs")
        return v


class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(None, ge=0)  # None: the server's default (--max-tokens)
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    best_of: Optional[int] = Field(None, ge=1, le=1)
    suffix: Optional[str] = None

    @property
    def wanted_tokens(self) -> Optional[int]:
        return self.max_tokens

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v):
        if v:
            raise ValueError("suffix is not supported by this server")
        return v


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as OpenAI's error object; request validation errors name the field."""

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
