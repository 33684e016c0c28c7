"""The OpenAI shapes on their own (no model, no server): fields accepted only at their neutral value,
what a request turns into for the engine, and which nulls the response models send or leave out.
The shapes over HTTP, validated against OpenAI's published spec, are in test_serve.py."""
import pytest
from pydantic import ValidationError

from webtune.deploy.openai_api import (ChatChunkChoice, ChatCompletionChunk, ChatRequest, Completion,
                                       CompletionChoice, CompletionRequest, Delta, Usage)

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}
ANSWER = {"id": "x-1", "created": 1, "model": "m", "system_fingerprint": "m@v1"}


@pytest.mark.parametrize("request_type, base, field, neutral, refused, needle", [
    (ChatRequest, CHAT, "presence_penalty", 0, 0.5, "penalties are not supported"),
    (ChatRequest, CHAT, "frequency_penalty", 0.0, -1, "penalties are not supported"),
    (ChatRequest, CHAT, "logit_bias", {}, {"7": 3}, "logit_bias is not supported"),
    (ChatRequest, CHAT, "logprobs", False, True, "use /v1/completions"),
    (CompletionRequest, COMPLETION, "suffix", "", "tail", "suffix is not supported"),
    (CompletionRequest, COMPLETION, "presence_penalty", 0, 2, "penalties are not supported"),
])
def test_a_refused_field_takes_only_its_neutral_value(request_type, base, field, neutral, refused, needle):
    assert getattr(request_type(**base, **{field: neutral}), field) == neutral
    assert not getattr(request_type(**base), field)  # left out: the neutral default
    with pytest.raises(ValidationError) as err:
        request_type(**base, **{field: refused})
    (error,) = err.value.errors()
    assert error["loc"] == (field,) and needle in error["msg"]


def test_what_a_request_asks_of_the_engine():
    chat = ChatRequest(**CHAT, stop="END", seed=10, temperature=0.3, top_p=0.5, max_tokens=9)
    first, third = chat.settings(9, 0), chat.settings(9, 2)
    assert (first.stop, first.seed, third.seed) == (["END"], 10, 12)  # each choice its own seed
    assert (first.max_tokens, first.temperature, first.top_p) == (9, 0.3, 0.5)
    assert ChatRequest(**CHAT).settings(None, 1).seed is None and ChatRequest(**CHAT).settings(None, 0).stop == []
    assert ChatRequest(**CHAT, max_tokens=5, max_completion_tokens=7).wanted_tokens == 7
    assert CompletionRequest(**COMPLETION, max_tokens=0).wanted_tokens == 0
    assert not ChatRequest(**CHAT).include_usage and ChatRequest(**CHAT, stream_options={"include_usage": True}).include_usage
    with pytest.raises(ValidationError, match="at most 4 stop sequences"):
        ChatRequest(**CHAT, stop=list("abcde"))


def test_responses_leave_out_only_the_keys_openai_leaves_out():
    def chunk(delta, finish=None, **extra):
        return ChatCompletionChunk(**ANSWER, **extra, choices=[ChatChunkChoice(index=0, delta=delta,
                                                                               finish_reason=finish)]).model_dump()
    first, piece, last = (chunk(Delta(role="assistant", content="")), chunk(Delta(content="Hi")),
                          chunk(Delta(), "stop"))
    assert [c["choices"][0]["delta"] for c in (first, piece, last)] == [
        {"role": "assistant", "content": ""}, {"content": "Hi"}, {}]
    assert piece["choices"][0] == {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
    assert "usage" not in last and piece["object"] == "chat.completion.chunk"
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    tail = ChatCompletionChunk(**ANSWER, choices=[], usage=usage).model_dump()
    assert tail["choices"] == [] and tail["usage"] == usage.model_dump()
    streamed = Completion(**ANSWER, choices=[CompletionChoice(index=1, text="a")]).model_dump()
    assert "usage" not in streamed
    assert streamed["choices"] == [{"index": 1, "text": "a", "logprobs": None, "finish_reason": None}]
    assert {**ANSWER, "object": "text_completion"}.items() <= streamed.items()
