"""A fake teacher on 127.0.0.1: `POST /v1/chat/completions` in the OpenAI wire format, deterministic.

For a question prompt (a `<section>...</section>` block and "Write N different questions") it
answers `{"questions": [...]}` with N questions built from the section's first line and words, so
every section gets its own; for a judge prompt ("You check questions") the scores, 0.1 for a
question that holds `off topic`, else 0.9. Usage counts 4 characters a token. Faults, on request:
  storm(k)          the next k requests get 429 with a short `retry-after-ms`
  garbage_on        sections holding this text get a reply that is no JSON and no question
  same_on           sections holding this text all get the same questions (duplicates across sections)
  off_topic         the k-th question of every other section says "off topic" (the judge rejects it)
  hold_after(k)     after k answered requests the next ones wait until `release()` (a crash test kills the client)
  refuse_format     400 on any `response_format`, as `webtune serve` and llama.cpp do
Counts: `requests` (every POST, 429s included), `answered` (200s), `bodies` (the 200s' bodies).
"""
from __future__ import annotations

import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler

from tests.fakes.base import LocalServer, send_json

_SECTION = re.compile(r"<section>\n?(.*?)\n?</section>", re.S)
_N = re.compile(r"Write (\d+) different")
_WORD = re.compile(r"[A-Za-z][A-Za-z_0-9]{3,}")
FORMS = ["How do I make option {x} of the {a} work with option {y} of the {b}?",
         "What does option {x} of the {a} return when option {y} meets the {b}?",
         "Why would option {x} of the {a} need option {y} before the {b}?",
         "When should option {x} of the {a} replace option {y} in the {b}?"]


class FakeTeacher(LocalServer):
    def __init__(self):
        self.requests = 0
        self.answered = 0
        self.bodies: list[dict] = []
        self.storm_left = 0
        self.garbage_on: str | None = None
        self.same_on: str | None = None
        self.off_topic: int | None = None       # the k-th question (1-based) of every section says "off topic"
        self.refuse_format = False
        self.answers = False                     # reply {question, answer} pairs (the teacher writes answers too)
        self.hold_after: int | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def handler(self) -> type:
        return type("Handler", (_Handler,), {"fake": self})

    def storm(self, k: int) -> None:
        with self._lock:
            self.storm_left = k

    def release(self) -> None:
        self._release.set()

    def prompts(self) -> list[str]:
        return [b["messages"][-1]["content"] for b in self.bodies]

    # ------------------------------------------------------------ what it writes
    def reply(self, content: str) -> str:
        if content.startswith("You check questions"):
            questions = re.findall(r"^\d+\. (.*)$", content, re.M)
            return json.dumps({"scores": [{"answered": 0.1 if "off topic" in q else 0.9, "self_contained": 0.9}
                                          for q in questions]})
        found = _SECTION.search(content)
        section = found.group(1) if found else content
        if self.garbage_on and self.garbage_on in section:
            return "Sure! Here are some thoughts about the section, in no particular format"
        n = int(_N.search(content).group(1)) if _N.search(content) else 3
        if self.same_on and self.same_on in section:
            return json.dumps({"questions": [FORMS[k % len(FORMS)].format(x=11, y=22, a="knob", b="dial")
                                             for k in range(n)]})
        words = sorted(set(_WORD.findall(section)), key=lambda w: zlib.crc32(w.encode())) or ["it"]
        nums = re.findall(r"\b\d+\b", section) or ["0", "1"]
        questions = [FORMS[k % len(FORMS)].format(a=words[(2 * k) % len(words)], b=words[(2 * k + 1) % len(words)],
                                                  x=nums[(2 * k) % len(nums)], y=nums[(2 * k + 1) % len(nums)])
                     for k in range(n)]
        if self.off_topic:
            questions[self.off_topic - 1] = f"Is {words[0]} {nums[0]} off topic here?"
        if self.answers:
            return json.dumps({"questions": [{"question": q, "answer": f"It takes option {nums[0]} and returns 42."}
                                             for q in questions]})
        return json.dumps({"questions": questions})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeTeacher

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        send_json(self, status, body, headers)

    def _error(self, status: int, message: str, type_: str, headers: dict | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": None}}, headers)

    def do_POST(self) -> None:
        fake = self.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._error(404, f"Unknown path {self.path}", "invalid_request_error")
        with fake._lock:
            fake.requests += 1
            storm = fake.storm_left > 0
            fake.storm_left -= storm
            hold = fake.hold_after is not None and fake.answered >= fake.hold_after
        if storm:
            return self._error(429, "Rate limit reached for requests", "requests", {"retry-after-ms": "5"})
        if fake.refuse_format and body.get("response_format"):
            return self._error(400, "response_format is not supported by this server", "invalid_request_error")
        if hold:
            fake._release.wait(30)
        text = fake.reply(body["messages"][-1]["content"])
        with fake._lock:
            fake.answered += 1
            fake.bodies.append(body)
        prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
        self._send(200, {"id": f"chatcmpl-{fake.answered}", "object": "chat.completion", "created": int(time.time()),
                         "model": body["model"], "system_fingerprint": None,
                         "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                      "message": {"role": "assistant", "content": text, "refusal": None}}],
                         "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4,
                                   "total_tokens": prompt_tokens + len(text) // 4}})
