"""A teacher's reply -> the requests it wrote, parsed robustly: the JSON the schema asks for, that
JSON inside a code fence or after some prose, a bare list, or (a small model's habit) a numbered
list of lines. None when nothing usable is in it (the section is asked once more, then rejected)."""
from __future__ import annotations

import json
import re

MIN_CHARS, MAX_CHARS = 8, 400        # shorter is no question; longer is the section pasted back
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)
_BULLET = re.compile(r"^\s*(?:[-*•]|\(?\d{1,2}[.):]|Q\d*[.:)]?)\s+", re.I)


def questions_schema(n: int, answers: bool) -> dict:
    """The JSON Schema of the reply (sent as response_format where the server takes it)."""
    item = ({"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
             "required": ["question", "answer"], "additionalProperties": False} if answers else {"type": "string"})
    return {"type": "object", "properties": {"questions": {"type": "array", "items": item, "minItems": n,
                                                           "maxItems": n}},
            "required": ["questions"], "additionalProperties": False}


def parse_questions(text: str, n: int, answers: bool = False) -> list | None:
    """Up to n distinct items: question strings, or {"question", "answer"} pairs when `answers`."""
    data = json_in(text or "")
    if isinstance(data, dict):
        data = next((data[k] for k in ("questions", "items", "requests", "prompts") if isinstance(data.get(k), list)),
                    None)
    if data is None and not answers:
        data = [line for line in (text or "").splitlines() if line.strip().endswith("?")]
    if not isinstance(data, list):
        return None
    out, seen = [], set()
    for item in data:
        got = _item(item, answers)
        if got is None:
            continue
        q = got["question"] if answers else got
        if q.lower() not in seen:
            seen.add(q.lower())
            out.append(got)
        if len(out) == n:
            break
    return out or None


def _item(item, answers: bool):
    if isinstance(item, dict):
        q = item.get("question") or item.get("q") or item.get("request")
        a = item.get("answer")
    else:
        q, a = item, None
    if not isinstance(q, str):
        return None
    q = " ".join(_BULLET.sub("", q.strip()).split()).strip(" \"'")
    if not MIN_CHARS <= len(q) <= MAX_CHARS:
        return None
    if not answers:
        return q
    if not isinstance(a, str) or not a.strip():
        return None
    return {"question": q, "answer": a.strip()}


def json_in(text: str):
    """The first JSON object or array in the text (fenced or not), or None."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        for i, ch in enumerate(chunk):
            if ch in "{[":
                try:
                    return decoder.raw_decode(chunk[i:])[0]
                except ValueError:
                    continue
    return None
