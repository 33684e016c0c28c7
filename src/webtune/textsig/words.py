"""Word-level view of a batch of texts, computed with numpy over all texts at once.

One pass over the batch's bytes gives what both the word filters and dedupe need, instead of a
`str.split()`, a Counter and a regex per record (3-4x cheaper at ~1 kB texts):
  tokens      whitespace-separated tokens per text (what `str.split()` counts)
  symbols     tokens with no letter or digit ("$$$", "-", "|"), plus '#' and "..." runs, per text
  hashes      64-bit hashes of the normalised words (lower case, ASCII punctuation dropped), flat
  counts      normalised words per text; `lengths` their byte lengths
Normalisation is ASCII-only (lower-casing and punctuation); other bytes are kept as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_P = np.uint64(0x100000001B3)                       # odd: invertible mod 2^64
_P_INV = np.uint64(pow(0x100000001B3, -1, 1 << 64))
_PUNCT = np.zeros(256, dtype=bool)
_PUNCT[np.frombuffer(b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", dtype=np.uint8)] = True
_SPACE = np.zeros(256, dtype=bool)
_SPACE[np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)] = True
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[65:91] += 32
_POWER_CACHE: dict[int, np.ndarray] = {}


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise: turns linear combinations into well-spread hashes."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def constants(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 1 << 63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def powers(base: np.uint64, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) mod 2^64, cached and grown by doubling."""
    key = int(base)
    have = _POWER_CACHE.get(key)
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        out = np.full(size, base, dtype=np.uint64)
        out[0] = 1
        have = _POWER_CACHE[key] = np.cumprod(out, dtype=np.uint64)
    return have[:n]


def _per_text(positions: np.ndarray, seps: np.ndarray) -> np.ndarray:
    """How many of the sorted `positions` fall in each text (texts end at `seps`)."""
    return np.diff(np.searchsorted(positions, seps), prepend=0)


@dataclass
class Words:
    hashes: np.ndarray
    counts: np.ndarray
    lengths: np.ndarray
    tokens: np.ndarray
    symbols: np.ndarray

    @property
    def first(self) -> np.ndarray:
        return np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)

    @property
    def owner(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.counts)), self.counts)

    def top_ngram_share(self, n: int) -> np.ndarray:
        """Per text: chars covered by the most frequent word n-gram's occurrences / chars in all words
        (Gopher's rule, on normalised words); 0 when no n-gram repeats."""
        texts = len(self.counts)
        share = np.zeros(texts)
        total = np.bincount(self.owner, weights=self.lengths, minlength=texts)
        m = len(self.hashes) - n + 1
        if m <= 0:
            return share
        owner = self.owner
        same = owner[:m] == owner[n - 1:]                # the n-gram stays inside one text
        coef = constants(n, 5)
        gram = self.hashes[:m] * coef[0]
        size = self.lengths[:m].astype(np.int64)
        for t in range(1, n):
            gram = gram + self.hashes[t:t + m] * coef[t]
            size = size + self.lengths[t:t + m]
        gram, size, own = mix(gram[same]), size[same], owner[:m][same]
        if not len(gram):
            return share
        run, run_own, run_size = _runs(gram, size, own, texts)
        cover = np.where(run >= 2, run * run_size, 0).astype(np.float64)
        group = np.flatnonzero(np.concatenate(([True], run_own[1:] != run_own[:-1])))
        best = np.zeros(texts)
        best[run_own[group]] = np.maximum.reduceat(cover, group)
        return np.divide(best, total, out=share, where=total > 0)


def _runs(gram: np.ndarray, size: np.ndarray, own: np.ndarray, texts: int):
    """The n-gram occurrences grouped: per run of one n-gram in one text, (count, text, char size);
    runs come out grouped by text."""
    if texts > 1 << 16:
        order = np.lexsort((gram, own))
        gram, size, own = gram[order], size[order], own[order]
        new = np.concatenate(([True], (gram[1:] != gram[:-1]) | (own[1:] != own[:-1])))
        starts = np.flatnonzero(new)
        return np.diff(np.append(starts, len(gram))), own[starts], size[starts]
    # one sort of packed keys (text | gram hash | size) instead of a two-key lexsort: equal keys are
    # one n-gram's occurrences in one text
    key = ((own.astype(np.uint64) << np.uint64(48)) | ((gram >> np.uint64(24)) << np.uint64(8))
           | np.minimum(size, 255).astype(np.uint64))
    key.sort()
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    first = key[starts]
    return (np.diff(np.append(starts, len(key))), (first >> np.uint64(48)).astype(np.int64),
            (first & np.uint64(255)).astype(np.int64))


def analyse(texts: list[str]) -> Words:
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    raw = _LOWER[np.frombuffer(b"\n".join(encoded) + b"\n", dtype=np.uint8)]
    seps_raw = np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)) + 1) - 1
    space_raw = _SPACE[raw]
    edge_raw = np.diff(space_raw.view(np.int8), prepend=np.int8(1))
    tokens = _per_text(np.flatnonzero(edge_raw == -1), seps_raw)
    hashes_at = np.flatnonzero(raw == 35)                # '#'
    dots = raw == 46
    ellipsis = np.flatnonzero(dots[:-2] & dots[1:-1] & dots[2:] & ~np.concatenate(([False], dots[:-3])))
    punct = _PUNCT[raw]
    dropped = np.flatnonzero(punct)                      # few: count them instead of a prefix sum
    seps = seps_raw - np.searchsorted(dropped, seps_raw)  # each text's "\n" after dropping punctuation
    data = raw[~punct]
    space = _SPACE[data]
    edge = np.diff(space.view(np.int8), prepend=np.int8(1), append=np.int8(1))
    starts = np.flatnonzero(edge[:-1] == -1)            # space -> word
    ends = np.flatnonzero(edge[1:] == 1)                # word -> space (inclusive end)
    # polynomial prefix hash: word [s, e] -> (F[e] - F[s-1]) * P^-s  (all mod 2^64)
    prefix = np.cumsum(data * powers(_P, len(data)), dtype=np.uint64)
    before = prefix[starts - 1]
    before[starts == 0] = 0
    lengths = ends - starts + 1
    # a plain polynomial hash per word; shingles, n-grams and the exact hash mix their combinations
    hashes = (prefix[ends] - before) * powers(_P_INV, len(data))[starts] + lengths.astype(np.uint64)
    counts = _per_text(starts, seps)
    symbols = (tokens - counts) + _per_text(hashes_at, seps_raw) + _per_text(ellipsis, seps_raw)
    return Words(hashes, counts, lengths, tokens, symbols)
