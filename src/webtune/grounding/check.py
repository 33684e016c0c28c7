"""`check(text, source)`: what a text states that its source does not.

The source is what the prompt showed (a string: the system and user turns) or the record's fields
(a dict). Values are compared by their normalised keys (values.py), attribute values by the
vocabulary learnt over the corpus (vocabulary.py): a phrase of the vocabulary in the text that the
source does not hold, in the same stemmed words, is unsupported. Identifiers shaped like code
(snake_case, dotted.names) are checked even when the vocabulary does not know them: a code name
no source holds is invented. Deterministic; no model, no download.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from .parent import parent as parent_score
from .text import STOP_WORDS, flatten, ngrams, source_text, tokens, words
from .values import SourceValues, values
from .vocabulary import Vocabulary, is_identifier


@dataclass(frozen=True, slots=True)
class Span:
    start: int          # character offsets in the checked text
    end: int
    kind: str           # "value" | "attribute"
    text: str
    field: str | None = None   # for an attribute: the field whose values it is one of

    def to_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "kind": self.kind, "text": self.text, "field": self.field}


@dataclass
class Finding:
    text: str
    spans: list[Span]
    coverage: float | None
    _source: object = field(default=None, repr=False)
    _reference: str | None = field(default=None, repr=False)

    @property
    def unsupported_values(self) -> int:
        return sum(s.kind == "value" for s in self.spans)

    @property
    def unsupported_attributes(self) -> int:
        return sum(s.kind == "attribute" for s in self.spans)

    @cached_property
    def parent(self) -> tuple[float, float, float]:
        """PARENT (precision, recall, F1) vs source ∪ reference; computed when first read."""
        return parent_score(tokens(self.text), _entries(self._source),
                            tokens(self._reference) if self._reference else None)

    def to_dict(self) -> dict:
        return {"unsupported_values": self.unsupported_values, "unsupported_attributes": self.unsupported_attributes,
                "coverage": self.coverage, "spans": [s.to_dict() for s in self.spans]}


def _entries(source) -> list[list[str]]:
    """The source as PARENT's table: one entry per field value (list items apart), or per line."""
    if isinstance(source, dict):
        return [tokens(s) for v in source.values() for s in flatten(v)]
    return [tokens(line) for line in str(source or "").splitlines() if line.strip()]


def check(text: str, source, vocab: Vocabulary | None = None, fields=None, reference: str | None = None) -> Finding:
    """The unsupported values and attribute values of `text` given `source` (str or dict of fields).

    fields: the prompt's declared fields (names looked up in a dict source, or a dict name -> value)
    for `coverage`; reference: a reference text, for PARENT only (it never makes a value supported:
    a reference can itself say more than its source)."""
    src = source_text(source)
    spans = _value_spans(text, src)
    taken = [(s.start, s.end) for s in spans]
    spans += _attribute_spans(text, src, vocab, taken)
    spans.sort(key=lambda s: (s.start, s.end))
    return Finding(text, spans, coverage(text, source, fields), source, reference)


def _value_spans(text: str, src: str) -> list[Span]:
    stated = SourceValues(src)
    return [Span(v.start, v.end, "value", v.text) for v in values(text) if not stated.supports(v)]


def _attribute_spans(text: str, src: str, vocab: Vocabulary | None, taken: list[tuple[int, int]]) -> list[Span]:
    ws = words(text)
    held = ngrams(tokens(src), max(vocab.max_words if vocab else 1, 1))
    out, i = [], 0
    longest = vocab.max_words if vocab else 0
    while i < len(ws):
        hit = None
        for n in range(min(longest, len(ws) - i), 0, -1):
            phrase = " ".join(w for w, _, _ in ws[i:i + n])
            if phrase in vocab.field_of:
                hit = (n, vocab.field_of[phrase])
                break
        if hit is None:
            start, end = ws[i][1], ws[i][2]
            if is_identifier(text[start:end]) and (ws[i][0],) not in held and not _overlaps(start, end, taken):
                out.append(Span(start, end, "attribute", text[start:end], "identifier"))
            i += 1
            continue
        n, fld = hit
        gram = tuple(w for w, _, _ in ws[i:i + n])
        start, end = ws[i][1], ws[i + n - 1][2]
        if gram not in held and not _overlaps(start, end, taken):
            out.append(Span(start, end, "attribute", text[start:end], fld))
        i += n
    return out


def _overlaps(start: int, end: int, taken: list[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in taken)


def coverage(text: str, source, fields) -> float | None:
    """The share of the declared fields the text realises (half a field's content words or more)."""
    if not fields:
        return None
    if isinstance(fields, dict):
        declared = fields
    elif isinstance(source, dict):
        declared = {name: source.get(name) for name in fields}
    else:
        return None
    said = set(tokens(text))
    realised = 0
    for value in declared.values():
        content = {t for s in flatten(value) for t in tokens(s) if t not in STOP_WORDS}
        if content and len(content & said) >= 0.5 * len(content):
            realised += 1
    return realised / len(declared) if declared else None
