"""The routes of `webtune serve`, one handler each, and what they answer: OpenAI's objects built
from a finished `Call`, or its server-sent events (`data: {chunk}` ... `data: [DONE]`) as they come.
The handlers reach the app's state through the `ServerDep` dependency (`app.state.server`)."""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Annotated, Any, AsyncIterator, Awaitable, Callable, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel

from webtune.deploy.generate import Generation, LocalModel, token_logprobs
from webtune.deploy.openai_api import (APIError, AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion,
                                       ChatCompletionChunk, ChatRequest, Completion, CompletionChoice,
                                       CompletionRequest, Delta, Logprobs, ModelCard, ModelList, check_model)
from webtune.deploy.serve_state import Call, Server

log = logging.getLogger("uvicorn.error")
router = APIRouter()


async def server_of(request: Request) -> Server:
    return request.app.state.server


ServerDep = Annotated[Server, Depends(server_of)]


# ---------------------------------------------------------------- the routes
@router.get("/health")
async def health(server: ServerDep) -> dict:
    holder = server.holder
    return {"status": "ok", "model": server.name, "version": holder.served.label if holder.served else None,
            "admitted": server.gate.admitted, "admitted_requests": server.gate.requests,
            "resident_models": len(holder.resident),
            "peak_resident_models": holder.peak_resident}


@router.get("/v1/models", response_model=None)
async def list_models(server: ServerDep) -> ModelList:
    return ModelList(data=[model_card(server, model_id) for model_id in server.holder.model_ids()])


@router.get("/v1/models/{model_id}", response_model=None)
async def retrieve_model(model_id: str, server: ServerDep) -> ModelCard:
    check_model(model_id, server.holder.model_ids())
    return model_card(server, model_id)


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, server: ServerDep) -> ChatCompletion | EventSourceResponse:
    call = await server.open_call("chat", body, lambda lm: [chat_prompt_ids(lm, body)])
    if body.stream:
        return await stream(call, chat_chunks(call))
    return await respond(call, chat_completion)


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, server: ServerDep) -> Completion | EventSourceResponse:
    if body.stream and body.logprobs is not None:
        raise APIError(400, "logprobs with stream is not supported; send stream: false", param="logprobs")
    served = server.holder.served
    if body.logprobs is not None and served is not None and not hasattr(served.lm.model, "forward"):
        raise APIError(400, "logprobs need the model in webtune's process: serve with --engine transformers",
                       param="logprobs")  # --engine vllm: the weights are in vLLM's process
    call = await server.open_call("completion", body, lambda lm: prompt_token_lists(lm, body.prompt))
    if body.stream:
        return await stream(call, completion_chunks(call))
    return await respond(call, completion)


def model_card(server: Server, model_id: str) -> ModelCard:
    source = server.holder.source
    model_dir = source.current()[1] if model_id == server.name else \
        source.registry / source.name / model_id.rpartition("@")[2] / "model"
    return ModelCard(id=model_id, created=int(model_dir.stat().st_mtime))


# ---------------------------------------------------------------- answering whole, or as events
async def respond(call: Call, build: Callable[[Call], Awaitable[BaseModel]]) -> BaseModel:
    try:
        await call.results()
        return await build(call)
    finally:
        call.end()


async def stream(call: Call, chunks: AsyncIterator[bytes]) -> EventSourceResponse:
    async def body():
        try:
            async for chunk in chunks:
                yield chunk
            yield format_sse_event(data_str="[DONE]")
        except Exception as e:  # headers are sent: report in-band, as OpenAI does
            log.exception("stream failed")
            yield APIError(500, f"generation failed: {type(e).__name__}", type="server_error").event()
        finally:
            call.end()
    return EventSourceResponse(await started(body()))


async def started(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Run a stream up to its first event now. A generator that never started would never run its
    `finally` (which frees its place in the gate and its lease) if the client left before the body
    was sent; a started one is closed by asyncio when dropped, so its `finally` always runs."""
    first = await events.__anext__()

    async def rest():
        yield first
        async for event in events:
            yield event
    return rest()


def sse(chunk: BaseModel) -> bytes:
    return format_sse_event(data_str=chunk.model_dump_json())


def answer_fields(call: Call, prefix: str) -> dict[str, Any]:
    """id, created, model and system_fingerprint: the same in every chunk of one answer."""
    return {"id": f"{prefix}-{call.id}", "created": int(time.time()), "model": call.server.name,
            "system_fingerprint": call.fingerprint}


# ---------------------------------------------------------------- before tokenising
_LONGEST_PIECE: "weakref.WeakKeyDictionary[LocalModel, int]" = weakref.WeakKeyDictionary()


def check_length_bound(lm: LocalModel, chars: int, param: str) -> None:
    """A 400 for a text that cannot fit the context, without tokenising it: a token covers at most
    the characters of the vocabulary's longest piece (byte-level pieces count bytes, so more), and
    the bound is doubled for normalisers that drop characters."""
    if lm not in _LONGEST_PIECE:
        pieces = lm.tokenizer.convert_ids_to_tokens(list(range(len(lm.tokenizer))))
        _LONGEST_PIECE[lm] = max((len(p) for p in pieces if p), default=1)
    at_least = chars // (2 * _LONGEST_PIECE[lm])
    if at_least > lm.max_context:
        raise APIError(400, f"This model's maximum context length is {lm.max_context} tokens; the {param} "
                            f"come to {chars} characters, so more than {at_least} tokens; shorten them",
                       param=param, code="context_length_exceeded")


# ---------------------------------------------------------------- chat
def chat_prompt_ids(lm: LocalModel, body: ChatRequest) -> list[int]:
    messages = [m.as_template_message() for m in body.messages]
    check_length_bound(lm, sum(len(m["content"]) for m in messages), "messages")
    try:
        return lm.chat_prompt_ids(messages)
    except Exception as e:  # e.g. a template that demands alternating user/assistant turns
        raise APIError(400, f"the model's chat template rejected the messages: {e}", param="messages") from None


async def chat_completion(call: Call) -> ChatCompletion:
    choices = [ChatChoice(index=index, message=AssistantMessage(content=gen.text), finish_reason=gen.finish_reason)
               for index, gen in sorted(call.generations.items())]
    return ChatCompletion(**answer_fields(call, "chatcmpl"), choices=choices, usage=call.usage())


def chat_chunk(fields: dict[str, Any], index: int, delta: Delta, finish: Optional[str] = None) -> bytes:
    return sse(ChatCompletionChunk(**fields, choices=[ChatChunkChoice(index=index, delta=delta,
                                                                      finish_reason=finish)]))


async def chat_chunks(call: Call) -> AsyncIterator[bytes]:
    fields = answer_fields(call, "chatcmpl")
    for index in range(call.body.n):
        yield chat_chunk(fields, index, Delta(role="assistant", content=""))
    async for index, piece, gen in call.events():
        if piece:
            yield chat_chunk(fields, index, Delta(content=piece))
        if gen is not None:
            yield chat_chunk(fields, index, Delta(), gen.finish_reason)
    if call.body.include_usage:
        yield sse(ChatCompletionChunk(**fields, choices=[], usage=call.usage()))


# ---------------------------------------------------------------- completions
def prompt_token_lists(lm: LocalModel, prompt: Any) -> list[list[int]]:
    """OpenAI's four prompt shapes (text, texts, token ids, lists of token ids) -> token id lists."""
    if isinstance(prompt, str):
        prompt = [prompt]
    if prompt and isinstance(prompt[0], int):
        prompt = [prompt]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    vocab = len(lm.tokenizer)
    for p in prompt:
        if isinstance(p, str):
            check_length_bound(lm, len(p), "prompt")
    out = []
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


async def completion(call: Call) -> Completion:
    choices = [await completion_choice(call, index, gen) for index, gen in sorted(call.generations.items())]
    return Completion(**answer_fields(call, "cmpl"), choices=choices, usage=call.usage())


async def completion_choice(call: Call, index: int, gen: Generation) -> CompletionChoice:
    body, lm, ids = call.body, call.served.lm, call.prompt_of(index)
    logprobs = None
    if body.logprobs is not None:  # a forward pass: off the event loop
        logprobs = await asyncio.get_running_loop().run_in_executor(None, completion_logprobs, lm, ids, gen, body)
    echo = lm.decode(ids) if body.echo else ""
    return CompletionChoice(index=index, text=echo + gen.text, logprobs=logprobs, finish_reason=gen.finish_reason)


def completion_logprobs(lm: LocalModel, ids: list[int], gen: Generation, body: CompletionRequest) -> Logprobs:
    """Logprobs over the echoed prompt and/or the completion, in one forward pass over both
    (what lm-evaluation-harness sums for log-likelihood tasks)."""
    scored = token_logprobs(lm, ids + gen.token_ids, top=body.logprobs)
    if not body.echo:
        scored = scored[len(ids):]
    offsets, pos = [], 0
    for t in scored:
        offsets.append(pos)
        pos += len(t.token)
    return Logprobs(tokens=[t.token for t in scored], token_logprobs=[t.logprob for t in scored],
                    top_logprobs=[t.top if t.logprob is not None else None for t in scored], text_offset=offsets)


def completion_chunk(fields: dict[str, Any], index: int, text: str, finish: Optional[str] = None) -> bytes:
    return sse(Completion(**fields, choices=[CompletionChoice(index=index, text=text, finish_reason=finish)]))


async def completion_chunks(call: Call) -> AsyncIterator[bytes]:
    fields = answer_fields(call, "cmpl")
    yield format_sse_event(comment="webtune")  # something to send before the first token: see `started`
    if call.body.echo:
        for index, ids, _, _ in call.jobs():
            yield completion_chunk(fields, index, call.served.lm.decode(ids))
    async for index, piece, gen in call.events():
        if piece:
            yield completion_chunk(fields, index, piece)
        if gen is not None:
            yield completion_chunk(fields, index, "", gen.finish_reason)
