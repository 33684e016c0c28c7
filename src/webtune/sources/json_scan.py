"""Counting the items of a JSON array from its bytes (a tokenizer, no parser), and where the JSON
breaks: what the ledger's counts and the files parser's truncation repair rely on."""
from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import orjson


@dataclass
class JsonItems:
    n: int | None               # complete items of the array (None: the file holds no such array)
    broke_at: int | None        # byte offset where the bytes stop being valid JSON (None: intact)


_TOKEN = re.compile(rb'\s*(?:("(?:[^"\\]|\\.)*")|([\[\]{},:])|(-?[0-9][0-9eE.+-]*|true|false|null)|(\S))', re.S)


def json_items(path: Path, key: str | None = None) -> JsonItems:
    """The complete items of the top-level array (or of the array at `key` of the top-level
    object), by a tokenizer over the bytes; where the JSON breaks, the offset of the break."""
    size = Path(path).stat().st_size
    if size == 0:
        return JsonItems(None, None)
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start = 3 if mm[:3] == b"\xef\xbb\xbf" else 0
        return _Scan(key).run(_TOKEN.finditer(mm, start), size)


class _Scan:
    """A small state machine: brackets must match; inside the counted array, items and commas
    must alternate. Items are counted as they complete."""

    def __init__(self, key: str | None):
        self.key, self.stack, self.target = key, [], None
        self.n, self.expect_item, self.seen_array = 0, True, False
        self.last_key, self.after_colon = None, False

    def run(self, tokens, size: int) -> JsonItems:
        for m in tokens:
            if not self.step(m):
                return JsonItems(self.n if self.seen_array else None, m.start(m.lastindex))
        if self.stack:  # the file ends inside the array: truncated
            return JsonItems(self.n if self.seen_array else None, size)
        return JsonItems(self.n if self.seen_array else None, None)

    def step(self, m) -> bool:
        string, punct, scalar, bad = m.groups()
        if bad is not None:
            return False
        depth = len(self.stack)
        if self.target is not None and depth == self.target:
            return self._in_array(string, punct, scalar)
        if punct in (b"[", b"{"):
            self._open(punct, depth)
        elif punct in (b"]", b"}"):
            return self._close(punct, depth)
        elif depth == 1 and self.stack[0] == "{":
            self._object_member(string, punct)
        elif depth == 0 and self.seen_array:
            return False  # something after the array closed
        return True

    def _open(self, punct: bytes, depth: int) -> None:
        self.stack.append(punct.decode())
        top_array = depth == 0 and punct == b"["  # the reader takes a top-level array whatever json_key says
        keyed = (depth == 1 and punct == b"[" and self.after_colon and self.key is not None
                 and self.last_key == self.key and not self.seen_array)
        if top_array or keyed:
            self.target, self.seen_array, self.expect_item = depth + 1, True, True
        self.after_colon = False

    def _close(self, punct: bytes, depth: int) -> bool:
        if not self.stack or {"]": "[", "}": "{"}[punct.decode()] != self.stack[-1]:
            return False
        self.stack.pop()
        if self.target is not None and len(self.stack) == self.target:
            self.n += 1  # a container item just completed
            self.expect_item = False
        return True

    def _object_member(self, string, punct) -> None:
        if punct == b":":
            self.after_colon = True
        elif string is not None and not self.after_colon:
            self.last_key = orjson.loads(string)
        else:
            self.after_colon = False

    def _in_array(self, string, punct, scalar) -> bool:
        if punct == b"]":
            if self.expect_item and self.n > 0:
                return False  # `[1,]`
            self.stack.pop()
            self.target = None
            return True
        if punct == b",":
            if self.expect_item:
                return False
            self.expect_item = True
            return True
        if not self.expect_item or punct in (b"}", b":"):
            return False
        if punct in (b"[", b"{"):
            self.stack.append(punct.decode())
            return True
        self.n += 1  # a string or scalar item
        self.expect_item = False
        return True
