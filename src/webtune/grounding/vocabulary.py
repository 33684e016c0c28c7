"""The attribute vocabulary: the values each record field takes across the whole corpus (materials,
colours, brands, options, code identifiers), so that a text naming "wool" is caught when its own
record holds no wool but other records do.

Learnt from short value segments (a field value, a list item, or the parts of a value between
commas, colons, brackets: "Flexora High-density EVA Foam Roller, Portable, Forest Green"), as
phrases of 1-3 words that do not start or end with a stop word. Robustness rules:
  - a phrase must recur (`min_df` records) and not be everywhere (`max_df` share of records);
  - a phrase the corpus's own prose (long values: descriptions, page text) uses freely without
    its record's short fields holding it is ordinary language, not an attribute value: "travel" in
    "travel workouts" when only travel pillows have it in their title. Kept only when at least
    `min_grounded` of the records whose prose says it also hold it in a short field;
  - code identifiers (snake_case, dotted.names, camelCase, `backticked`) come from every value.
Counts add up across parts of the corpus (`VocabularyCounts.merge`), so a vocabulary learnt shard
by shard is the same as one learnt in one pass, for any number of shards.
"""
from __future__ import annotations

import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import orjson

from .text import STOP_WORDS, flatten, ngrams, tokens

MAX_PHRASE = 3           # words in a learnt phrase
SHORT_SEGMENT = 6        # a segment with at most this many words holds values; a longer one is prose
BUCKETS = 1 << 20        # hashed prose-mention counters (collisions only make a phrase look more generic)
_SEGMENTS = re.compile(r"[,;:|()\[\]{}\n]+|\s[-–—/]\s")
_URL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*://|www\.)\S*\s*$", re.IGNORECASE)
_IDENT = re.compile(r"`([^`\n]{1,60})`|\b([A-Za-z_][A-Za-z0-9]*(?:[_.][A-Za-z0-9]+)+(?:\(\))?|[a-z]+[A-Z][A-Za-z0-9]*)\b")
_SENTENCE_END = re.compile(r"[.!?]\s+[A-Z0-9]")
_SKIP_FIELDS = frozenset({"url", "urls", "image", "images", "input", "timestamp", "id", "asin", "sku"})


def is_identifier(word: str) -> bool:
    """A code name by its shape: snake_case, dotted.name (each part 2+ chars), camelCase."""
    if "_" in word.strip("_") and any(c.isalpha() for c in word):
        return True
    if word.startswith("__") and word.endswith("__") and len(word) > 4:   # __init__
        return True
    if "." in word:
        parts = word.split(".")
        return all(len(p) >= 2 for p in parts) and word[0].isalpha() and not word.replace(".", "").isdigit()
    return bool(re.fullmatch(r"[a-z]+[A-Z][A-Za-z0-9]*", word))


_DIGIT = re.compile(r"\d")


def _phrase_ok(gram: tuple[str, ...]) -> bool:
    if gram[0] in STOP_WORDS or gram[-1] in STOP_WORDS:
        return False
    if any(_DIGIT.search(t) for t in gram):   # values are the value checker's business
        return False
    return not (len(gram) == 1 and len(gram[0]) < 3)


def _good_grams(toks: list[str]) -> list[tuple[str, ...]]:
    """The 1..MAX_PHRASE-grams of toks that pass _phrase_ok (per-token flags worked out once)."""
    edge_bad = [t in STOP_WORDS or bool(_DIGIT.search(t)) for t in toks]
    digit = [bool(_DIGIT.search(t)) for t in toks]
    out = []
    for n in range(1, MAX_PHRASE + 1):
        for i in range(len(toks) - n + 1):
            j = i + n - 1
            if edge_bad[i] or edge_bad[j] or (n == 1 and len(toks[i]) < 3) or (n > 2 and any(digit[i + 1:j])):
                continue
            out.append(tuple(toks[i:i + n]))
    return out


def is_prose(s: str) -> bool:
    """A value written as sentences (a description, a page's text, a feature bullet), not a list of values."""
    n = len(s.split())
    if "\n" in s.strip():   # several lines: a page's text, a list or a table, not one value
        return True
    return n > 40 or bool(_SENTENCE_END.search(s)) or (n >= 4 and s.rstrip().endswith((".", "!", "?")))


def _bucket(phrase: str) -> int:
    return zlib.crc32(phrase.encode()) & (BUCKETS - 1)


def _identifiers(text: str) -> set[str]:
    out = set()
    for m in _IDENT.finditer(text):
        name = m.group(1) or m.group(2)
        toks = tokens(name)
        if not toks or all(t in STOP_WORDS or t.isdigit() or len(t) < 2 for t in toks):
            continue   # `or`, `0 0`: a keyword or number in code font
        if m.group(1) and 1 <= len(toks) <= MAX_PHRASE and name == name.strip() and _code_like(name):
            out.add(" ".join(toks))
        elif m.group(2) and is_identifier(name.removesuffix("()")):
            out.add(" ".join(toks))
    return out


def _code_like(name: str) -> bool:
    """A backticked span worth learning: a code name or a call (`sqlite3_open`, `os.path`, `f()`,
    `PRAGMA page_size`), not a keyword or plain word in code font (`for`, `is`, `list`)."""
    parts = name.replace("(", " ").replace(")", " ").split()
    return "(" in name or any(is_identifier(p) for p in parts) or (len(parts) > 1 and parts[0].isupper())


class VocabularyCounts:
    """Additive statistics over records; `vocabulary()` turns them into a Vocabulary."""

    def __init__(self):
        self.records = 0
        self.df: Counter = Counter()          # (field, phrase) -> records whose short segments hold it
        self.idents: Counter = Counter()      # (field, identifier) -> records
        self.whole: Counter = Counter()       # (field, phrase) -> records where it is a whole value
        self.mentions = np.zeros(BUCKETS, dtype=np.uint32)   # phrase bucket -> records whose prose says it
        self.grounded = np.zeros(BUCKETS, dtype=np.uint32)   # ... and whose short segments hold it too

    def add(self, fields: dict) -> None:
        self.records += 1
        short_grams: set[tuple[str, ...]] = set()
        candidates: set[tuple[str, str]] = set()
        idents: set[tuple[str, str]] = set()
        whole: set[tuple[str, str]] = set()
        prose: set[tuple[str, ...]] = set()
        for name, value in fields.items():
            if name.lower() in _SKIP_FIELDS:
                continue
            for s in flatten(value):
                if _URL.match(s):
                    continue
                idents.update((name, i) for i in _identifiers(s))
                for seg in [s] if is_prose(s) else _SEGMENTS.split(s):
                    toks = tokens(seg)
                    if not toks:
                        continue
                    grams = ngrams(toks, MAX_PHRASE)
                    if len(toks) <= SHORT_SEGMENT and not is_prose(s):
                        short_grams |= grams
                        if seg.strip() == s.strip() and len(toks) <= MAX_PHRASE:
                            # a whole short value is one value ("Good Boy Goods"), not its words
                            if _phrase_ok(tuple(toks)):
                                whole.add((name, " ".join(toks)))
                            continue
                        candidates.update((name, " ".join(g)) for g in _good_grams(toks))
                    else:
                        prose.update(_good_grams(toks))
        self.df.update(candidates | whole)
        self.whole.update(whole)
        self.idents.update(idents)
        if prose:
            said = np.fromiter((_bucket(" ".join(g)) for g in prose), dtype=np.int64, count=len(prose))
            held = np.fromiter((_bucket(" ".join(g)) for g in prose if g in short_grams), dtype=np.int64)
            np.add.at(self.mentions, np.unique(said), 1)
            if len(held):
                np.add.at(self.grounded, np.unique(held), 1)

    def merge(self, other: "VocabularyCounts") -> "VocabularyCounts":
        self.records += other.records
        self.df.update(other.df)
        self.idents.update(other.idents)
        self.whole.update(other.whole)
        self.mentions += other.mentions
        self.grounded += other.grounded
        return self

    def save(self, path: Path) -> None:
        """For a shard's partial counts (prepare's map -> reduce)."""
        path = Path(path)
        used = np.flatnonzero(self.mentions).astype(np.uint32)   # sparse: a shard says a few thousand phrases
        np.savez(path.with_suffix(".npz"), used=used, mentions=self.mentions[used], grounded=self.grounded[used])
        path.with_suffix(".json").write_bytes(orjson.dumps(
            {"records": self.records, "df": [[f, p, n] for (f, p), n in sorted(self.df.items())],
             "idents": [[f, p, n] for (f, p), n in sorted(self.idents.items())],
             "whole": [[f, p, n] for (f, p), n in sorted(self.whole.items())]}))

    @classmethod
    def load(cls, path: Path) -> "VocabularyCounts":
        path = Path(path)
        out = cls()
        with np.load(path.with_suffix(".npz")) as arrays:
            out.mentions[arrays["used"]] = arrays["mentions"]
            out.grounded[arrays["used"]] = arrays["grounded"]
        data = orjson.loads(path.with_suffix(".json").read_bytes())
        out.records = data["records"]
        out.df = Counter({(f, p): n for f, p, n in data["df"]})
        out.idents = Counter({(f, p): n for f, p, n in data["idents"]})
        out.whole = Counter({(f, p): n for f, p, n in data["whole"]})
        return out

    def vocabulary(self, min_df: int = 2, max_df: float = 0.5, min_grounded: float = 0.5,
                   min_mentions: int = 3) -> "Vocabulary":
        limit = max(min_df, max_df * self.records)
        best: dict[str, tuple[int, str]] = {}
        whole_of = {p: f for (f, p) in self.whole}
        for (f, p) in self.whole:   # its proper parts, marked by spaces around them
            ws = p.split()
            for g in ngrams(ws, len(ws) - 1):
                whole_of.setdefault(" " + " ".join(g) + " ", f)
        for (field, phrase), n in self.df.items():
            if n < min_df or n > limit or _straddles(phrase, field, whole_of):
                continue
            b = _bucket(phrase)
            said, held = int(self.mentions[b]), int(self.grounded[b])
            if said >= min_mentions and held < min_grounded * said:
                continue
            if phrase not in best or (n, field) > best[phrase]:
                best[phrase] = (n, field)
        for (field, phrase), n in self.idents.items():
            if n <= limit and phrase not in best:
                best[phrase] = (n, field)
        fields: dict[str, list[str]] = {}
        for phrase, (_, field) in sorted(best.items()):
            fields.setdefault(field, []).append(phrase)
        return Vocabulary(fields, self.records)


def _straddles(phrase: str, field: str, whole_of: dict[str, str]) -> bool:
    """'brightfield aluminum': another field's whole value (a brand) plus more words is no value."""
    if whole_of.get(" " + phrase + " ", field) != field:
        return True   # a word of another field's value ("home" of the brand "Hearthstone Home")
    words = phrase.split()
    for k in range(1, len(words)):
        for part in (" ".join(words[:k]), " ".join(words[k:])):
            if whole_of.get(part, field) != field:
                return True
    return False


class Vocabulary:
    """phrase -> the field it is a value of; phrases are stemmed words joined by spaces."""

    def __init__(self, fields: dict[str, list[str]] | None = None, records: int = 0):
        self.fields = {f: sorted(set(ps)) for f, ps in sorted((fields or {}).items())}
        self.records = records
        self.field_of = {p: f for f, ps in self.fields.items() for p in ps}
        self.max_words = max((p.count(" ") + 1 for p in self.field_of), default=0)

    @classmethod
    def fit(cls, records, **limits) -> "Vocabulary":
        """Learn each field's values from an iterable of records (dicts of fields)."""
        counts = VocabularyCounts()
        for fields in records:
            counts.add(fields)
        return counts.vocabulary(**limits)

    def __len__(self) -> int:
        return len(self.field_of)

    def __contains__(self, phrase: str) -> bool:
        return phrase in self.field_of

    def to_dict(self) -> dict:
        return {"version": 1, "records": self.records, "fields": self.fields}

    def save(self, path) -> None:
        """As JSON (sorted, so the same corpus gives the same bytes)."""
        Path(path).write_bytes(orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")

    @classmethod
    def load(cls, path) -> "Vocabulary":
        data = orjson.loads(Path(path).read_bytes())
        return cls(data.get("fields") or {}, data.get("records", 0))
