"""The files a shard's map leaves under RUN/tmp/prepare for the reduce and the second map.

  cand-<shard>.jsonl      per candidate: a header line [id, source, example ids, templates, note],
                          then its examples, one JSON line each
  ids-<shard>.txt         the candidates' record ids, one a line (the reduce names keepers with them)
  sig-<shard>.npz         per candidate: key (input, prefix number, #n, byte offset of its header,
                          examples), exact hash, LSH band hashes, empty flag
  prefixes-<shard>.json   per input, the id prefixes (`<source>:<where>`) in the order this shard
                          numbered them (the reduce ranks them across shards: `reduce.input_order`)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import orjson



@dataclass(slots=True)
class Candidate:
    """A record that passed every per-record step, as cand-<shard>.jsonl holds it."""

    id: str
    source: str
    example_ids: list[str]
    templates: list[str]
    note: str                       # the tasks that could not use it, and why
    lines: list[bytes]              # its examples, one JSON line each


class CandidateFiles:
    """One shard's candidate and id files, written as batches arrive; its sig and prefixes files
    at the end. A record added is (key, encoded candidate, number of examples)."""

    def __init__(self, work: Path, shard: int, bands: int):
        self.work, self.shard, self.n_bands = work, shard, bands
        self.keys: list[tuple] = []
        self.exact: list[np.ndarray] = []
        self.bands: list[np.ndarray] = []
        self.empty: list[np.ndarray] = []

    def __enter__(self) -> CandidateFiles:
        self.cand = open(self.work / f"cand-{self.shard}.jsonl", "wb")
        self.ids = open(self.work / f"ids-{self.shard}.txt", "wb")
        return self

    def __exit__(self, *exc) -> None:
        self.cand.close()
        self.ids.close()

    def add(self, docs, keep: np.ndarray, exact: np.ndarray, bands: np.ndarray, empty: np.ndarray) -> None:
        """The docs whose `keep` is set (in order: each has id, key, encoded, n_examples), and their signatures."""
        for doc, kept in zip(docs, keep.tolist()):
            if kept:
                self.keys.append(doc.key + (self.cand.tell(), doc.n_examples))
                self.ids.write(doc.id.encode() + b"\n")
                self.cand.write(doc.encoded)
        self.exact.append(exact[keep])
        self.bands.append(bands[keep])
        self.empty.append(empty[keep])

    def finish(self, prefixes: list[list[str]]) -> None:
        """The signatures, and per input the id prefixes in the order this shard numbered them."""
        (self.work / f"prefixes-{self.shard}.json").write_bytes(orjson.dumps(prefixes))
        none = np.zeros(0, dtype=np.uint64)
        np.savez(self.work / f"sig-{self.shard}.npz",
                 key=np.array(self.keys, dtype=np.int64).reshape(-1, 5),
                 exact=np.concatenate(self.exact) if self.exact else none,
                 bands=np.concatenate(self.bands) if self.bands else np.zeros((0, self.n_bands), dtype=np.uint64),
                 empty=np.concatenate(self.empty) if self.empty else np.zeros(0, dtype=bool))


def encode(c: Candidate) -> bytes:
    """Its header line [id, source, example ids, templates, note], then its example lines."""
    return orjson.dumps([c.id, c.source, c.example_ids, c.templates, c.note]) + b"\n" + b"".join(c.lines)


def read_candidates(work: Path, shard: int, offsets: Iterable[int]) -> Iterator[Candidate]:
    """The candidates whose headers start at `offsets` (in that order: seeking only where a source
    dealt records out of id order)."""
    at = 0
    with open(work / f"cand-{shard}.jsonl", "rb") as f:
        for offset in offsets:
            if offset != at:
                f.seek(offset)
            header = f.readline()
            rid, src, ids, templates, note = orjson.loads(header)
            lines = [f.readline() for _ in ids]
            at = offset + len(header) + sum(map(len, lines))
            yield Candidate(rid, src, ids, templates, note, lines)


def load_signatures(work: Path, shard: int):
    """sig-<shard>.npz: key, exact, bands, empty."""
    return np.load(work / f"sig-{shard}.npz")


def load_prefixes(work: Path, shard: int) -> list[list[str]]:
    return orjson.loads((work / f"prefixes-{shard}.json").read_bytes())


def read_ids(work: Path, shard: int) -> list[bytes]:
    return (work / f"ids-{shard}.txt").read_bytes().split(b"\n")
