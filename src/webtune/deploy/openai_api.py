"""The OpenAI wire shapes `webtune serve` speaks: request models (unknown fields refused, as
OpenAI does), response models (what the handlers return, validated against OpenAI's published
OpenAPI spec in tests/deploy/test_serve.py), `APIError` as `{"error": {message, type, param, code}}`,
and the exception handlers that turn every failure into that shape."""
from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.sse import format_sse_event
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_serializer
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

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)

    def event(self) -> bytes:
        """The error as a server-sent event: once a stream's headers are sent, OpenAI reports in-band."""
        return format_sse_event(data_str=json.dumps(self.body()))


def check_model(asked: str, served: str) -> None:
    """The 404 OpenAI sends for a model it does not serve."""
    if asked != served:
        raise APIError(404, f"The model `{asked}` does not exist; this server serves `{served}`",
                       param="model", code="model_not_found")


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
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=8)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
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

    def settings(self, max_tokens: Optional[int], choice: int) -> GenerationSettings:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        seed = None if self.seed is None else self.seed + choice
        return GenerationSettings(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                                  stop=stops, seed=seed)


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: Annotated[Optional[bool], refused("chat logprobs are not supported; use /v1/completions "
                                                "with logprobs")] = None

    @property
    def wanted_tokens(self) -> Optional[int]:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingRequest):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = Field(None, ge=0)  # None: the server's default (--max-tokens)
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    best_of: Optional[int] = Field(None, ge=1, le=1)
    suffix: Annotated[Optional[str], refused("suffix is not supported by this server")] = None

    @property
    def wanted_tokens(self) -> Optional[int]:
        return self.max_tokens


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
    msg = err.get("msg", "invalid request")
    if err.get("type") == "extra_forbidden":
        msg = f"Unrecognized request argument supplied: {loc[-1] if loc else '?'}"
    elif err.get("type") == "json_invalid":
        msg = "The request body is not valid JSON"
    return APIError(400, msg, param=".".join(loc) or None).response()


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return APIError(exc.status_code, str(exc.detail), code=None).response()


async def unavailable(request: Request, exc: WebtuneError) -> JSONResponse:
    return APIError(503, str(exc), type="server_error").response()


async def crash(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed")
    return APIError(500, f"internal error: {type(exc).__name__}", type="server_error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as OpenAI's error object; request validation errors name the field."""
    for exc_type, handler in ((APIError, api_error), (RequestValidationError, invalid_request),
                              (StarletteHTTPException, http_error), (WebtuneError, unavailable),
                              (Exception, crash)):
        app.add_exception_handler(exc_type, handler)
