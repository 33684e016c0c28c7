"""One chat completion from the teacher, through the openai SDK: any OpenAI-compatible endpoint.

The SDK itself retries 429, 408, 409 and 5xx (honouring `Retry-After`/`retry-after-ms`, else
exponential backoff) up to `teacher.max_retries` times; there is no second retry layer here. What is
still failing after that stops the step with one line (the replies in so far are cached, so a rerun
continues): a rate limit never drops a row. `response_format: auto` sends the JSON Schema and, if
the server refuses the field (llama.cpp and `webtune serve` accept no response_format), asks
without it for the rest of the run; the reply is parsed robustly either way.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import WebtuneError
from ..openai_client import api_error, make_client


@dataclass
class Reply:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str | None = None


class RateLimited(WebtuneError):
    """429/5xx/connection errors outlasted the SDK's retries: stop, keep what is cached."""


class Teacher:
    def __init__(self, t):
        """`t` is cfg.teacher (plain namespaces)."""
        self.t = t
        self.client = make_client(t.api_key_env, t.base_url, setting="teacher.api_key_env",
                                  max_retries=int(t.max_retries), timeout=float(t.timeout), keyless_loopback=True)
        self.format = str(t.response_format)
        self._lock = threading.Lock()

    def chat(self, messages: list[dict], schema: dict | None, model: str | None = None, seed_offset: int = 0) -> Reply:
        import openai
        t = self.t
        kwargs = dict(model=model or t.model, messages=messages, temperature=float(t.temperature),
                      top_p=float(t.top_p), max_tokens=int(t.max_tokens))
        if t.seed is not None:
            kwargs["seed"] = int(t.seed) + seed_offset
        fmt = self._response_format(schema)
        try:
            resp = self.client.chat.completions.create(**kwargs, **fmt)
        except openai.BadRequestError as exc:
            if not fmt or str(t.response_format) != "auto" or "response_format" not in str(exc):
                raise api_error(exc, "asking the teacher", t.api_key_env) from None
            with self._lock:
                self.format = "none"      # the server takes no response_format: parse the plain reply
            return self.chat(messages, schema, model, seed_offset)
        except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
            raise RateLimited(f"the teacher at {t.base_url or 'api.openai.com'} still refused after "
                              f"{t.max_retries} retries ({api_error(exc, 'asking the teacher', t.api_key_env)}); "
                              f"the replies in so far are cached: run again (or `webtune resume RUN`) to go on, "
                              f"or lower teacher.max_concurrency / raise teacher.max_retries") from None
        except openai.OpenAIError as exc:
            raise api_error(exc, "asking the teacher", t.api_key_env) from None
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        return Reply(text=(choice.message.content or "") if choice else "",
                     input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                     output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                     finish_reason=choice.finish_reason if choice else None)

    def _response_format(self, schema: dict | None) -> dict:
        fmt = self.format
        if schema is None or fmt == "none":
            return {}
        if fmt == "json_object":
            return {"response_format": {"type": "json_object"}}
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "reply", "schema": schema, "strict": True}}}
