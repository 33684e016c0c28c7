"""The hostile corpus: every kind of input an adversarial (or merely careless) user can hand a files
source, each with variants, written into a folder with what the ledger must say about every record.

`write_domain(root)` lays out a domain in `root` (conf/, tpl/, data/) and returns the expected fates:
{record id: reason or None}, None meaning "read normally" (kept, unless a later stage drops it for an
ordinary reason such as a duplicate or the split). Run `webtune prepare` in `root` on it.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

WORDS = ("amber basalt cedar delta ember fjord garnet harbor indigo juniper kestrel lagoon meadow nectar "
         "orchid pebble quartz raven saffron tundra umber velvet willow xenon yarrow zephyr").split()


def qa(n: int, note: str = "") -> dict:
    """A distinct, ordinary question/answer record (distinct enough that dedupe keeps each)."""
    w = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(12)]
    return {"question": f"Question {n}: where do the {' '.join(w[:6])} and the {' '.join(w[6:])} meet?{note}",
            "answer": f"For question {n}, the {' '.join(w[:6])} meet the {' '.join(w[6:])} by the road."}


def nested(levels: int) -> bytes:
    """One JSON object nesting `levels` arrays deep (no recursion, no parser: plain bytes)."""
    return b'{"question": "deep?", "answer": "deep", "x": ' + b"[" * levels + b"]" * levels + b"}"


def _with_nesting(record: dict, levels: int) -> bytes:
    """`record` with a field `x` nesting `levels` arrays: the record is `levels + 1` deep."""
    return json.dumps(record)[:-1].encode() + b', "x": ' + b"[" * levels + b"]" * levels + b"}"


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


BOM = b"\xef\xbb\xbf"
SOURCE = "hostile"
MAX_RECORD_BYTES = 100_000
DEEP_LEVELS = 100_000     # the item that grew a prepare worker past 7 GB


def write_data(data: Path) -> dict[str, str | None]:
    """Every data case under `data/`; returns {record id: expected reason, or None for read normally}."""
    data.mkdir(parents=True)
    expect: dict[str, str | None] = {}
    n = iter(range(1, 10_000))

    def ok(rel: str, count: int) -> None:
        expect.update({f"{SOURCE}:{rel}#{i}": None for i in range(1, count + 1)})

    # deep nesting: 300 levels crashed orjson.dumps outside the rejection path; 5,000 is under any
    # recursion limit we could raise to; the item before and after each is read normally
    (data / "deep_array.json").write_bytes(b"[" + b",".join(
        [json.dumps(qa(next(n))).encode(), nested(300), nested(DEEP_LEVELS), json.dumps(qa(next(n))).encode()]) + b"]")
    expect.update({f"{SOURCE}:deep_array.json#1": None, f"{SOURCE}:deep_array.json#2": "too_deep",
                   f"{SOURCE}:deep_array.json#3": "too_deep", f"{SOURCE}:deep_array.json#4": None})
    # ... under json_key (an object holding the array), and deep-but-under-the-cap (read normally)
    (data / "deep_keyed.json").write_bytes(b'{"meta": {"v": 1}, "items": [' + b",".join(
        [nested(2000), json.dumps(qa(next(n))).encode(), json.dumps({**qa(next(n)), "x": json.loads(nested(60))}).encode()]) + b"]}")
    expect.update({f"{SOURCE}:deep_keyed.json#1": "too_deep", f"{SOURCE}:deep_keyed.json#2": None,
                   f"{SOURCE}:deep_keyed.json#3": None})
    # deep JSONL lines: past orjson's own 1,024-level cap, and under it but past ours (orjson.loads
    # reads 300 levels, and orjson.dumps of the record later would fail at 255)
    (data / "deep_lines.jsonl").write_bytes(jsonl([qa(next(n))]) + nested(3000) + b"\n" + nested(300) + b"\n"
                                            + jsonl([qa(next(n))]))
    expect.update({f"{SOURCE}:deep_lines.jsonl#1": None, f"{SOURCE}:deep_lines.jsonl#2": "too_deep",
                   f"{SOURCE}:deep_lines.jsonl#3": "too_deep", f"{SOURCE}:deep_lines.jsonl#4": None})
    # at the cap exactly (100 levels: read, and through every step after) and one past it, in both readers
    at_cap = (qa(next(n)), qa(next(n)))
    (data / "deep_at_cap.json").write_bytes(b"[" + b",".join(
        [_with_nesting(at_cap[0], 99), _with_nesting(qa(0), 100)]) + b"]")
    (data / "deep_at_cap.jsonl").write_bytes(_with_nesting(at_cap[1], 99) + b"\n" + _with_nesting(qa(0), 100) + b"\n")
    for name in ("deep_at_cap.json", "deep_at_cap.jsonl"):
        expect.update({f"{SOURCE}:{name}#1": None, f"{SOURCE}:{name}#2": "too_deep"})

    # byte-order marks (Windows exports), with CRLF line ends
    (data / "bom_array.json").write_bytes(BOM + b"[\r\n" + b",\r\n".join(
        json.dumps(qa(next(n))).encode() for _ in range(3)) + b"\r\n]\r\n")
    ok("bom_array.json", 3)
    (data / "bom_lines.jsonl").write_bytes(BOM + jsonl([qa(next(n)) for _ in range(3)]).replace(b"\n", b"\r\n"))
    ok("bom_lines.jsonl", 3)
    rows = [qa(next(n)) for _ in range(3)]
    (data / "bom_rows.csv").write_bytes(BOM + b"question,answer\r\n" + b"".join(
        f'"{r["question"]}","{r["answer"]}"\r\n'.encode() for r in rows))
    ok("bom_rows.csv", 3)
    (data / "bom_object.json").write_bytes(BOM + b'{"items": [' + json.dumps(qa(next(n))).encode() + b"]}")
    ok("bom_object.json", 1)
    (data / "bom_page.html").write_bytes(BOM + b"<!DOCTYPE html><html><head><title>Tea notes</title></head><body>"
                                         b"<article><h1>Tea notes</h1>" + b"".join(
        f"<p>{qa(i)['answer']} {qa(i + 1)['answer']}</p>".encode() for i in range(900, 906)) + b"</article></body></html>")
    expect[f"{SOURCE}:bom_page.html#1"] = "*"     # a page: kept or rejected by the template, never unread
    (data / "bom_talk.vtt").write_bytes(BOM + b"WEBVTT\r\n\r\n00:00:01.000 --> 00:00:04.000\r\nHello and welcome "
                                        b"to the tea talk.\r\n\r\n00:00:04.000 --> 00:00:08.000\r\nToday: oolong.\r\n")
    expect[f"{SOURCE}:bom_talk.vtt#1"] = "*"
    (data / "bom_talk.srt").write_bytes(BOM + b"1\r\n00:00:01,000 --> 00:00:04,000\r\nHello from the SRT.\r\n\r\n"
                                        b"2\r\n00:00:04,000 --> 00:00:08,000\r\nStill here.\r\n")
    expect[f"{SOURCE}:bom_talk.srt#1"] = "*"

    # NUL characters: escaped in JSON, raw in a CSV cell and a JSONL line
    (data / "nul.json").write_bytes(b"[" + json.dumps({**qa(next(n)), "answer": "Tea\u0000 with a NUL."}).encode()
                                    + b"]")
    ok("nul.json", 1)
    (data / "nul.csv").write_bytes(b"question,answer\n" + f'"{qa(next(n))["question"]}","Raw\0NUL in a cell, '
                                   f'still a fine answer."\n'.encode())
    ok("nul.csv", 1)
    (data / "nul.jsonl").write_bytes(json.dumps(qa(next(n))).encode().replace(b"For", b"F\\u0000or") + b"\n")
    ok("nul.jsonl", 1)

    # compressed inputs inside a folder source
    with gzip.open(data / "packed.jsonl.gz", "wb") as fh:
        fh.write(jsonl([qa(next(n)) for _ in range(4)]))
    ok("packed.jsonl.gz", 4)
    with gzip.open(data / "packed.json.gz", "wb") as fh:
        fh.write(BOM + json.dumps([qa(next(n)) for _ in range(2)]).encode())
    ok("packed.json.gz", 2)
    with gzip.open(data / "packed.csv.gz", "wb") as fh:
        fh.write(b"question,answer\n" + b"".join(f'"{r["question"]}","{r["answer"]}"\n'.encode()
                                                 for r in (qa(next(n)), qa(next(n)))))
    ok("packed.csv.gz", 2)
    with gzip.open(data / "bad_utf8.jsonl.gz", "wb") as fh:    # invalid UTF-8 inside the compressed stream
        fh.write(jsonl([qa(next(n))]) + b'{"question": "bad \xff\xfe bytes?", "answer": "x"}\n' + jsonl([qa(next(n))]))
    expect.update({f"{SOURCE}:bad_utf8.jsonl.gz#1": None, f"{SOURCE}:bad_utf8.jsonl.gz#2": "invalid_utf8",
                   f"{SOURCE}:bad_utf8.jsonl.gz#3": None})
    # a cut stream and one that is not gzip at all: one rejection each, never half a file
    (data / "truncated.json.gz").write_bytes(gzip.compress(json.dumps([qa(next(n)) for _ in range(3)]).encode())[:-12])
    (data / "not_gzip.jsonl.gz").write_bytes(jsonl([qa(next(n))]))
    expect.update({f"{SOURCE}:truncated.json.gz#1": "corrupt_compressed", f"{SOURCE}:not_gzip.jsonl.gz#1": "corrupt_compressed"})

    # a huge single string (over max_record_bytes) between two normal items
    # a huge single string (over max_record_bytes: MAX_RECORD_BYTES in the source config) between two
    # normal items, in a JSON array and on a JSONL line
    big = b'{"question": "big?", "answer": "' + b"a" * (2 * MAX_RECORD_BYTES) + b'"}'
    (data / "huge_string.json").write_bytes(b"[" + json.dumps(qa(next(n))).encode() + b"," + big + b","
                                            + json.dumps(qa(next(n))).encode() + b"]")
    (data / "huge_line.jsonl").write_bytes(jsonl([qa(next(n))]) + big + b"\n" + jsonl([qa(next(n))]))
    for name in ("huge_string.json", "huge_line.jsonl"):
        expect.update({f"{SOURCE}:{name}#1": None, f"{SOURCE}:{name}#2": "too_large", f"{SOURCE}:{name}#3": None})

    # a file of no format webtune reads, in the folder: skipped, and said so
    (data / "notes.txt").write_text("not data")

    # symlink loops (a `**` glob must not follow a link into a folder it has seen) and a link out
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / "sub" / "deeper" / "inner.jsonl").write_bytes(jsonl([qa(next(n))]))
    ok("sub/deeper/inner.jsonl", 1)
    os.symlink("..", data / "sub" / "deeper" / "up")            # sub/deeper/up -> sub
    os.symlink("../..", data / "sub" / "deeper" / "top")        # -> data
    os.symlink(".", data / "sub" / "self")
    outside = data.parent / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_bytes(jsonl([{"question": "what is outside?", "answer": "a secret"}]))
    os.symlink(outside / "secret.jsonl", data / "linked_out.jsonl")    # a link to a file outside: skipped
    os.symlink(outside, data / "linked_out_dir")                        # a link to a folder outside: skipped
    return expect


def write_domain(root: Path) -> dict[str, str | None]:
    """conf/ (a files source over data/**, a question/answer template), tpl/, data/; the expected fates."""
    expect = write_data(root / "data")
    (root / "conf/source").mkdir(parents=True)
    (root / "conf/template").mkdir(parents=True)
    (root / "tpl").mkdir()
    (root / "conf/source/hostile.yaml").write_text(
        f"kind: files\nname: {SOURCE}\nfiles:\n  paths: ['data/**/*.*']\n  root: data\n  json_key: items\n"
        f"  max_record_bytes: {MAX_RECORD_BYTES}\n")
    (root / "tpl/user.j2").write_text("{{ question }}")
    (root / "tpl/assistant.j2").write_text("{{ answer }}")
    (root / "conf/template/hostile.yaml").write_text(
        "name: hostile\ntasks:\n  - name: qa\n    user: tpl/user.j2\n    assistant: tpl/assistant.j2\n"
        "    fields: [question, answer]\n")
    return expect
