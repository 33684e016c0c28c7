"""Exact and near-duplicate detection, split into a map half and a reduce half.

Map (per shard, per batch of records): `Signer.sign(texts)` normalises each text (lower case, ASCII
punctuation dropped, split on whitespace), hashes words and word shingles with numpy over the whole
batch at once, computes MinHash signatures with rensa (or datasketch), and keeps only
  exact   one 64-bit hash of the normalised word sequence
  bands   b 64-bit LSH band hashes (b bands x r rows of the signature)
per record: 8 * (b + 1) bytes, so a million records fit in ~140 MB and travel as small files.

Reduce (once, over all shards of all inputs, domain and general): `keepers` links records
that share the exact hash or any band hash and labels each connected group with its smallest
global position (min-label propagation in numpy). The keeper of a group is therefore its first
record in input order, whatever the sharding; every other member is a duplicate of it.
Candidates are not re-verified against the full signature (datatrove does not either); the band
layout is chosen so a pair at the threshold collides with probability >= 0.9 (see `lsh_params`).
"""
from __future__ import annotations

import numpy as np

from ..errors import WebtuneError

from .words import Words, analyse, constants, mix


def lsh_params(num_perm: int, threshold: float) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) such that a pair at
    `threshold` Jaccard still becomes a candidate with probability >= 0.9."""
    if not 0.0 < threshold < 1.0:
        raise WebtuneError(f"prepare.dedupe.threshold must be between 0 and 1, got {threshold}")
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold ** rows) ** bands >= 0.9:
            return bands, rows
    return num_perm, 1


def word_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every normalised word of every text, and words per text."""
    w = analyse(texts)
    return w.hashes, w.counts


def shingle_hashes(words: np.ndarray, counts: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the word k-shingles of each text (a text shorter than k is one shingle).
    Returns (flat hashes, row offsets) as rensa's flat-matrix API wants them."""
    n = len(words)
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(n) - first[owner]                    # word's position inside its text
    coef = constants(k, 7)
    acc = words * coef[0]
    for t in range(1, k):
        nxt = np.zeros(n, dtype=np.uint64)
        nxt[:n - t] = words[t:]
        same = np.zeros(n, dtype=bool)
        same[:n - t] = owner[t:] == owner[:n - t]
        acc = acc + np.where(same, nxt * coef[t], np.uint64(0))
    valid = (pos <= (counts[owner] - k)) | ((counts[owner] < k) & (pos == 0))
    shingles = mix(acc[valid])
    per_text = np.bincount(owner[valid], minlength=len(counts))
    offsets = np.concatenate(([0], np.cumsum(per_text))).astype(np.uint64)
    return shingles, offsets


_POOL_STARTED = False  # rensa hashes on a Rust (rayon) thread pool, which a forked child inherits dead


def pool_started() -> bool:
    """Whether this process has used rensa's thread pool: a fork of it would hang in rensa."""
    return _POOL_STARTED


class Signer:
    """Per-worker: texts -> (exact hash, LSH band hashes, empty flag) for each text."""

    def __init__(self, cfg):
        self.exact, self.near = bool(cfg.exact), bool(cfg.near)
        self.k, self.num_perm, self.engine = int(cfg.shingle), int(cfg.num_perm), str(cfg.engine)
        if self.k < 1 or self.num_perm < 2:
            raise WebtuneError("prepare.dedupe: shingle must be >= 1 and num_perm >= 2")
        if self.engine not in ("rensa", "datasketch"):
            raise WebtuneError(f"prepare.dedupe.engine must be rensa or datasketch, got {self.engine!r}")
        self.bands, self.rows = lsh_params(self.num_perm, float(cfg.threshold))
        self.band_coef = constants(self.rows, 11)

    def sign(self, texts: list[str], analysed: Words | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(texts)
        w = analysed if analysed is not None else analyse(texts)
        words, counts = w.hashes, w.counts
        empty = counts == 0
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        pos = np.arange(len(words)) - np.repeat(first, counts)
        # order-sensitive sum of mixed (word, position) hashes, per text, via one prefix sum
        weighted = mix(words ^ mix(pos.astype(np.uint64)))
        prefix = np.concatenate(([np.uint64(0)], np.cumsum(weighted, dtype=np.uint64)))
        ends = first + counts
        exact = mix(prefix[ends] - prefix[first] + counts.astype(np.uint64))
        if not self.near:
            return exact, np.zeros((n, 0), dtype=np.uint64), empty
        shingles, offsets = shingle_hashes(words, counts, self.k)
        sig = self._signatures(shingles, offsets)
        used = sig[:, :self.bands * self.rows].reshape(n, self.bands, self.rows)
        bands = mix((used * self.band_coef).sum(axis=2, dtype=np.uint64))
        return exact, bands, empty

    def _signatures(self, shingles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        if self.engine == "rensa":
            global _POOL_STARTED
            _POOL_STARTED = True
            from rensa import RMinHash
            matrix = RMinHash.digest_matrix_from_flat_token_hashes(shingles, offsets, self.num_perm, 42)
            return np.array(matrix.to_rows(), dtype=np.uint64).reshape(-1, self.num_perm)
        from datasketch import MinHash
        rows = []
        for a, b in zip(offsets[:-1], offsets[1:]):
            m = MinHash(num_perm=self.num_perm, seed=42, hashfunc=int)
            m.update_batch((shingles[int(a):int(b)] & np.uint64(0xFFFFFFFF)).tolist())
            rows.append(m.hashvalues)
        return np.array(rows, dtype=np.uint64).reshape(-1, self.num_perm)


def _groups(column: np.ndarray, active: np.ndarray):
    """Members of groups of >= 2 equal values among the active rows: (member indices, group start offsets, group sizes)."""
    idx = np.flatnonzero(active)
    return grouped(column[idx], idx)


Groups = tuple  # (member indices, group start offsets, group sizes): the members of groups of >= 2


def collisions(exact: np.ndarray, bands: np.ndarray, empty: np.ndarray, use_near: bool = True):
    """The colliding groups, computed locally: (exact-hash groups or None, one entry per band with collisions)."""
    active = ~empty
    near = [g for g in (_groups(bands[:, b], active) for b in range(bands.shape[1]) if use_near) if g is not None]
    return _groups(exact, active), near


def grouped(key: np.ndarray, members: np.ndarray) -> Groups | None:
    """Groups of `members` sharing a `key` (rows gathered elsewhere, e.g. by Ray Data): same shape as `_groups`."""
    if len(key) < 2:
        return None
    order = np.argsort(key, kind="stable")
    key, members = key[order], members[order]
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    sizes = np.diff(np.append(starts, len(key)))
    multi = np.repeat(sizes >= 2, sizes)
    if not multi.any():
        return None
    sizes = sizes[sizes >= 2]
    return members[multi], np.concatenate(([0], np.cumsum(sizes)[:-1])), sizes


def keepers(n: int, exact_groups: Groups | None, near_groups: list[Groups], use_exact: bool = True,
            use_near: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The keeper decision, a pure function of the colliding groups (as sets of global input positions),
    whoever gathered them. Returns (keeper, first_copy): keeper[i] is the first record of i's
    duplicate group (i itself when i is kept); first_copy[i] the first record with exactly the same
    normalised text (i itself when none comes before it)."""
    keeper = np.arange(n, dtype=np.int64)
    first_copy = np.arange(n, dtype=np.int64)
    columns = []
    if exact_groups is not None:
        members, starts, sizes = exact_groups
        first_copy[members] = np.repeat(np.minimum.reduceat(members, starts), sizes)
        if use_exact:
            columns.append(exact_groups)
    if use_near:
        columns += near_groups
    changed = True
    while changed:  # min-label propagation: converges to each connected group's smallest index
        changed = False
        for members, starts, sizes in columns:
            labels = keeper[members]
            low = np.repeat(np.minimum.reduceat(labels, starts), sizes)
            if (low < labels).any():
                keeper[members] = low
                changed = True
        keeper = keeper[keeper]  # pointer jumping: shortens chains between passes
    return keeper, first_copy


def find_duplicates(exact: np.ndarray, bands: np.ndarray, empty: np.ndarray,
                    use_exact: bool = True, use_near: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Records are in global input order: `keepers` over the locally found collisions."""
    exact_groups, near_groups = collisions(exact, bands, empty, use_near)
    return keepers(len(exact), exact_groups, near_groups, use_exact, use_near)
