"""JSON arrays two ways. `json_values` builds a file's items from ijson's event stream with a depth
cap (an item nesting deeper than MAX_DEPTH is skipped, never built: a 100k-level item costs no
memory), linear in depth. `json_items` counts the items from the bytes (a tokenizer, no parser) and
finds where the JSON breaks: what the ledger's counts and the files parser's truncation repair rely on.
"""
from __future__ import annotations

import mmap
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from ..fileio import BOM, compressed, open_input

# Deeper than any real export (a product record nests 3-4 levels), and far enough under orjson's
# 254-level limit that a record wrapped in a ledger event or a shard line still serialises.
MAX_DEPTH = 100


class TooDeep:
    """Stands in for an item that nests deeper than MAX_DEPTH (it was skipped, not built)."""


_TOO_DEEP = TooDeep()
_OPEN = ("start_map", "start_array")
_CLOSE = frozenset(("end_map", "end_array"))
_SCALAR = frozenset(("string", "number", "boolean", "null"))


class JsonValues:
    """The items of the top-level array (key None), of the array at `key` of the top-level object,
    or the document itself (key ""): each a value, or a TooDeep. Iterating raises ijson's errors
    where the JSON breaks; everything after the array is still parsed, so trailing garbage raises
    too. `found_key` says afterwards whether the object had an array at `key`."""

    def __init__(self, fh, key: str | None):
        self.fh, self.key, self.found_key = fh, key, False

    def __iter__(self) -> Iterator[object]:
        import ijson

        events = iter(ijson.basic_parse(self.fh, use_float=True))
        event, value = next(events)
        if self.key == "":
            yield _value(event, value, events)
        elif self.key is None:
            if event == "start_array":
                yield from _array(events)
        elif event == "start_map":
            for event, member in events:
                if event == "end_map":
                    break
                event, value = next(events)   # the member's value
                if member == self.key and event == "start_array" and not self.found_key:
                    self.found_key = True
                    yield from _array(events)
                elif event in _OPEN:
                    _skip(1, events)
        for _ in events:
            pass


def _array(events: Iterator) -> Iterator[object]:
    for event, value in events:
        if event == "end_array":
            return
        yield _value(event, value, events)


def _value(event: str, value, events: Iterator):
    """One value from its first event: containers built with an explicit stack (no recursion, linear
    in depth); past MAX_DEPTH the rest of the value is consumed by counting and a TooDeep returned.
    The hot loop of the JSON reader: flat, the commonest events first."""
    if event == "start_map":
        root = cur = {}
        is_dict = True
    elif event == "start_array":
        root = cur = []
        is_dict = False
    else:
        return value
    stack: list = []
    key = None
    for event, value in events:
        if event == "map_key":
            key = value
        elif event in _SCALAR:
            if is_dict:
                cur[key] = value
            else:
                cur.append(value)
        elif event in _CLOSE:
            if not stack:
                return root
            cur, key, is_dict = stack.pop()
        else:
            new = {} if event == "start_map" else []
            if is_dict:
                cur[key] = new
            else:
                cur.append(new)
            stack.append((cur, key, is_dict))
            if len(stack) >= MAX_DEPTH:
                _skip(len(stack) + 1, events)   # every container still open, the root included
                return _TOO_DEEP
            cur, is_dict = new, event == "start_map"
    return root   # not reached: ijson raises on a document that ends inside a value


def _skip(depth: int, events: Iterator) -> None:
    """Consume events until `depth` open containers have closed, keeping only the count."""
    for event, _ in events:
        if event in _CLOSE:
            depth -= 1
            if not depth:
                return
        elif event in _OPEN:
            depth += 1


def too_deep(obj) -> bool:
    """Whether a parsed value nests deeper than MAX_DEPTH (iteratively: no recursion to run out of)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if type(value) is dict else value if type(value) is list else ()
        for child in children:
            if type(child) in (dict, list):
                if depth + 1 > MAX_DEPTH:
                    return True
                stack.append((child, depth + 1))
    return False


@dataclass
class JsonItems:
    n: int | None               # complete items of the array (None: the file holds no such array)
    broke_at: int | None        # byte offset where the bytes stop being valid JSON (None: intact)


_TOKEN = re.compile(rb'\s*(?:("(?:[^"\\]|\\.)*")|([\[\]{},:])|(-?[0-9][0-9eE.+-]*|true|false|null)|(\S))', re.S)


def json_items(path: Path, key: str | None = None) -> JsonItems:
    """The complete items of the top-level array (or of the array at `key` of the top-level
    object), by a tokenizer over the bytes; where the JSON breaks, the offset of the break."""
    if compressed(path):   # the tokenizer wants the bytes in one piece: decompressed into a temporary file
        with tempfile.TemporaryFile() as tmp:
            with open_input(path) as fh:
                shutil.copyfileobj(fh, tmp)
            tmp.flush()
            return _scan_file(tmp, key)
    with open(path, "rb") as fh:
        return _scan_file(fh, key)


def _scan_file(fh, key: str | None) -> JsonItems:
    size = fh.seek(0, 2)
    if size == 0:
        return JsonItems(None, None)
    with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start = 3 if mm[:3] == BOM else 0
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
