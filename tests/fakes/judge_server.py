"""A fake OpenAI-compatible judge on 127.0.0.1: `POST /v1/chat/completions`, deterministic verdicts.

It reads the two answers from the `<answer_a>` / `<answer_b>` blocks of webtune's judge prompt and
answers like a judge would, in the chat.completion wire format (with `usage`). Policies:
  keyword  the answer that mentions `keyword` wins; if both or neither do, the longer one; same length: tie
  first    always "A" (a judge with pure position bias: asking both orders must cancel it)
  garbage  a reply that is not a verdict
  echo     not a judge but a chat model: "<model> answers: <last user turn>" (for evaluating API models)
A claim check (webtune's `<source>`/`<answer>` prompt, eval.judge.mode=claims) is answered with each
sentence of the answer as a claim, supported when every number in it is in the source and it names
`keyword` only where the source does; under `garbage`, with the same unreadable reply.
Every request body and its Authorization header are kept, so a test can check what was asked.
Errors as OpenAI sends them: `{"error": {"message", "type", "code"}}`.
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler

from tests.fakes.base import LocalServer


class FakeJudge(LocalServer):
    def __init__(self, policy: str = "keyword", keyword: str = "", api_key: str | None = "sk-judge-test"):
        self.policy, self.keyword, self.api_key = policy, keyword, api_key
        self.bodies: list[dict] = []
        self.auth: list[str] = []
        self.fail_next: list[int] = []   # statuses to answer before serving normally
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def handler(self) -> type:
        return type("Handler", (_Handler,), {"judge": self})

    def answers_asked(self) -> list[tuple[str, str]]:
        """(answer A, answer B) of every request, in arrival order."""
        return [answers(b["messages"][-1]["content"]) for b in self.bodies]

    def reply(self, model: str, messages: list[dict]) -> str:
        if self.policy == "echo":
            last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
            return f"{model} answers: {last_user}"
        if "<source>" in messages[-1]["content"] and self.policy != "garbage":
            return self.check_claims(*block(messages[-1]["content"], "source", "answer"))
        return self.decide(*answers(messages[-1]["content"]))

    def check_claims(self, source: str, answer: str) -> str:
        claims = []
        for sentence in filter(None, (s.strip() for s in re.split(r"(?<=[.!?])\s+", answer))):
            numbers_held = all(n in source for n in re.findall(r"\d+", sentence))
            keyword = self.keyword.lower()
            keyword_held = not keyword or keyword not in sentence.lower() or keyword in source.lower()
            claims.append({"claim": sentence, "supported": numbers_held and keyword_held})
        return json.dumps({"claims": claims})

    def decide(self, a: str, b: str) -> str:
        if self.policy == "first":
            return json.dumps({"winner": "A", "reason": "the first answer"})
        if self.policy == "garbage":
            return "I cannot decide, both have merit."
        score_a = (self.keyword.lower() in a.lower() if self.keyword else False, len(a))
        score_b = (self.keyword.lower() in b.lower() if self.keyword else False, len(b))
        winner = "A" if score_a > score_b else "B" if score_b > score_a else "tie"
        return json.dumps({"winner": winner, "reason": f"{winner} mentions {self.keyword!r} or is longer"})


def block(user_content: str, *tags: str) -> tuple[str, ...]:
    """The text inside each <tag>...</tag> of webtune's judge prompt."""
    found = [re.search(rf"<{tag}>\n(.*?)\n</{tag}>", user_content, re.S) for tag in tags]
    return tuple(f.group(1) if f else "" for f in found)


def answers(user_content: str) -> tuple[str, str]:
    return block(user_content, "answer_a", "answer_b")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    judge: FakeJudge

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, type_: str, code: str | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": code}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"Unknown path {self.path}", "invalid_request_error", "not_found")
        judge = self.judge
        auth = self.headers.get("Authorization", "")
        if judge.api_key is not None and auth != f"Bearer {judge.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        with judge._lock:
            status = judge.fail_next.pop(0) if judge.fail_next else None
        if status:
            return self._error(status, "The server had an error while processing your request.", "server_error")
        try:
            body = json.loads(raw)
            messages = body["messages"]
            model = body["model"]
        except (ValueError, KeyError):
            return self._error(400, "body must be JSON with model and messages", "invalid_request_error")
        with judge._lock:
            judge.bodies.append(body)
            judge.auth.append(auth)
        text = judge.reply(model, messages)
        prompt_tokens = sum(len(m["content"]) for m in messages) // 4
        self._send(200, {"id": f"chatcmpl-{len(judge.bodies)}", "object": "chat.completion", "created": int(time.time()),
                         "model": model, "system_fingerprint": None,
                         "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                      "message": {"role": "assistant", "content": text, "refusal": None}}],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4,
                                   "total_tokens": prompt_tokens + len(text) // 4}})
