"""The OpenAI wire shapes `webtune serve` speaks: request models (unknown fields refused, as
OpenAI does; numbers strictly typed and bounded, so a seed past int64 is a 400, never a 500),
response models (what the handlers return, validated against OpenAI's published OpenAPI spec in
tests/deploy/test_serve.py), `APIError` as `{"error": {message, type, param, code}}`, the exception
handlers that turn every failure into that shape, and `BodyLimit`, the 413 before any parsing."""
from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import format_sse_event
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict, field_validator,
                      model_serializer)
from starlette.exceptions import HTTPException as StarletteHTTPException

from webtune.deploy.generate import GenerationSettings
from webtune.errors import WebtuneError

log = logging.getLogger("uvicorn.error")


# ---------------------------------------------------------------- errors
# a 429 or 503 always says when to come back (clients such as the openai SDK wait that long)
RETRY_STATUSES = (429, 503)
DEFAULT_RETRY_AFTER_S = 1


class APIError(Exception):
    """An error sent to the client as OpenAI's `{"error": {message, type, param, code}}`; a 429 or
    503 carries `Retry-After` (`retry_after` seconds, else DEFAULT_RETRY_AFTER_S)."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 param: Optional[str] = None, code: Optional[str] = None, retry_after: Optional[int] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.retry_after = retry_after

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        if self.status not in RETRY_STATUSES:
            return {}
        return {"Retry-After": str(max(1, self.retry_after or DEFAULT_RETRY_AFTER_S))}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers())

    def event(self) -> bytes:
        """The error as a server-sent event: once a stream's headers are sent, OpenAI reports in-band."""
        return format_sse_event(data_str=json.dumps(self.body()))


def check_model(asked: str, served: str | list[str]) -> None:
    """The 404 OpenAI sends for a model it does not serve (`served`: its id, or every id it serves)."""
    ids = [served] if isinstance(served, str) else served
    if asked not in ids:
        raise APIError(404, f"The model `{asked}` does not exist; this server serves "
                            f"{', '.join(f'`{i}`' for i in ids)}", param="model", code="model_not_found")


# ---------------------------------------------------------------- request shapes
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def refused(message: str) -> AfterValidator:
    """A field accepted so that clients which always send it work; any value but its neutral one
    (0, false, empty, null) is refused with `message`, naming the field."""
    def neutral_only(value: Any) -> Any:
        if value:
            raise ValueError(message)
        return value
    return AfterValidator(neutral_only)


NoPenalty = Annotated[float, refused("penalties are not supported by this server; send 0 or leave it out")]
# JSON numbers as OpenAI types them: an integer field refuses "7", 7.0 and true; a seed is an int64
# (torch seeds a generator from 64 bits: a larger one used to be a 500 mid-request)
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]
INT64 = (-2 ** 63, 2 ** 63 - 1)
MAX_MESSAGES = 2048  # a long conversation fits; more is a 400 before the chat template runs


def at_most(limit: int, what: str) -> BeforeValidator:
    """A list longer than `limit` refused before its items are validated (pydantic checks
    max_length after validating every item: 0.4 s of event loop for 4 MiB of tiny messages)."""
    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > limit:
            raise ValueError(f"at most {limit} {what}, not {len(value)}")
        return value
    return BeforeValidator(check)


# The prompt's union stops at a branch's first bad item: without fail_fast, 4 MiB of token ids were
# first validated as strings, every item an error (1.8 s instead of 0.24 s).
def _fast(t: Any) -> Any:
    return Annotated[t, Field(fail_fast=True)]


Prompt = Union[str, _fast(list[str]), _fast(list[Int]), _fast(list[_fast(list[Int])])]


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


class SamplingRequest(_Strict):
    """What chat and text completion requests share: the model, sampling, stop, streaming."""
    model: str
    temperature: Number = Field(1.0, ge=0.0, le=2.0)
    top_p: Number = Field(1.0, gt=0.0, le=1.0)
    n: Int = Field(1, ge=1, le=8)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[Int] = Field(None, ge=INT64[0], le=INT64[1])
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    presence_penalty: NoPenalty = 0.0
    frequency_penalty: NoPenalty = 0.0
    logit_bias: Annotated[Optional[dict[str, float]], refused("logit_bias is not supported by this server")] = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, v):
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def prompt_count(self) -> int:
        return 1

    @property
    def sequences(self) -> int:
        """What the request asks the engine to decode: prompts x n (known before tokenising)."""
        return self.prompt_count * self.n

    def settings(self, max_tokens: Optional[int], choice: int) -> GenerationSettings:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        seed = None if self.seed is None else self.seed + choice  # within torch's 64 bits: n <= 8
        return GenerationSettings(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                                  stop=stops, seed=seed)


class ChatRequest(SamplingRequest):
    messages: Annotated[list[ChatMessage], at_most(MAX_MESSAGES, "messages")] = Field(min_length=1)
    max_tokens: Optional[Int] = Field(None, ge=1)
    max_completion_tokens: Optional[Int] = Field(None, ge=1)
    logprobs: Annotated[Optional[bool], refused("chat logprobs are not supported; use /v1/completions "
                                                "with logprobs")] = None

    @property
    def wanted_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: Prompt
    max_tokens: Optional[Int] = Field(None, ge=0)  # None: the server's default (--max-tokens)
    echo: bool = False
    logprobs: Optional[Int] = Field(None, ge=0, le=5)
    best_of: Optional[Int] = Field(None, ge=1, le=1)
    suffix: Annotated[Optional[str], refused("suffix is not supported by this server")] = None

    @property
    def wanted_tokens(self) -> Optional[int]:
        return self.max_tokens

    @property
    def prompt_count(self) -> int:
        """OpenAI's four prompt shapes: a text or one token list is one prompt; a list of them, many."""
        p = self.prompt
        return 1 if isinstance(p, str) or not p or isinstance(p[0], int) else len(p)


# ---------------------------------------------------------------- response shapes
class _OmitNone(BaseModel):
    """Top-level keys left None are left out of the JSON, as OpenAI leaves them out (a delta's
    role, a chunk's usage); every other model sends its nulls."""

    @model_serializer(mode="wrap")
    def _omit_none(self, handler):
        return {key: value for key, value in handler(self).items() if value is not None}


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "webtune"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class _Answer(BaseModel):
    """What every completion object and chunk carries."""
    id: str
    created: int
    model: str
    system_fingerprint: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: str


class ChatCompletion(_Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class Delta(_OmitNone):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: None = None
    finish_reason: Optional[str] = None


class ChatCompletionChunk(_Answer, _OmitNone):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Optional[Usage] = None  # the last chunk only, with stream_options.include_usage


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[Optional[float]]  # None for the first echoed token: nothing precedes it
    top_logprobs: list[Optional[dict[str, float]]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: Optional[Logprobs] = None
    finish_reason: Optional[str] = None  # None in every streamed chunk but a choice's last


class Completion(_Answer, _OmitNone):
    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Optional[Usage] = None  # streamed chunks carry none


# ---------------------------------------------------------------- every failure in OpenAI's shape
_UNION_BRANCHES = ("str", "int", "float", "bool", "none")
_UNION_PREFIXES = ("list[", "dict[", "function-", "literal[", "nullable[")


async def api_error(request: Request, exc: APIError) -> JSONResponse:
    return exc.response()


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A 400 naming the field (pydantic names each union branch in the path; the client only needs
    the field)."""
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    loc = [p for p in loc if p not in _UNION_BRANCHES and not p.startswith(_UNION_PREFIXES)]
    param = ".".join(loc) or None
    msg = err.get("msg", "invalid request")
    if err.get("type") == "extra_forbidden":
        msg = f"Unrecognized request argument supplied: {loc[-1] if loc else '?'}"
    elif err.get("type") == "json_invalid":
        msg = "The request body is not valid JSON"
    elif not param and err.get("type") in ("model_attributes_type", "dict_type"):
        msg = "The request body must be a JSON object, sent with Content-Type: application/json"
    elif param:
        msg = f"Invalid '{param}': {msg}"
    return APIError(400, msg, param=param).response()


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return APIError(exc.status_code, str(exc.detail), code=None).response()


async def unavailable(request: Request, exc: WebtuneError) -> JSONResponse:
    return APIError(503, str(exc), type="server_error").response()  # with Retry-After, as every 503


async def crash(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed")
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` is a 413 before anything parses it. The
    body is read here (so it is held once, at most `max_bytes`) and replayed to the app; an
    oversized one is read on and dropped, up to DRAIN_FACTOR x `max_bytes`, so that a client still
    sending reads the 413 rather than a reset connection (a client that sent `Expect:
    100-continue` is answered before it sends anything)."""

    DRAIN_FACTOR = 64

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_bytes:
            if headers.get(b"expect", b"").lower() != b"100-continue":
                await self._drain(receive, 0)
            return await self._refuse(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                chunks.clear()
                await self._drain(receive, size)
                return await self._refuse(scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, which streaming responses listen for
        await self.app(scope, replay, send)

    async def _drain(self, receive: Any, size: int) -> None:
        while size <= self.DRAIN_FACTOR * self.max_bytes:
            message = await receive()
            size += len(message.get("body", b""))
            if message["type"] != "http.request" or not message.get("more_body", False):
                return

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        error = APIError(413, f"The request body is over {self.max_bytes} bytes, the most this server accepts "
                              f"(`webtune serve --max-body-bytes`); send less per request",
                         code="request_too_large")
        await error.response()(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as OpenAI's error object; request validation errors name the field."""
    for exc_type, handler in ((APIError, api_error), (RequestValidationError, invalid_request),
                              (StarletteHTTPException, http_error), (WebtuneError, unavailable),
                              (Exception, crash)):
        app.add_exception_handler(exc_type, handler)
