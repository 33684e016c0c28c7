"""Quality filters, each optional: the first one a record fails names the ledger reason.

Thresholds come from `prepare.filters` (FiltersConfig); the defaults there turn every filter off.
The repetition rules follow Gopher (Rae et al. 2021) as datatrove implements them, measured on
the record's main text:
  too_short / too_long       chars or words outside [min, max]
  language                   py3langid's top language not allowed, or below the confidence
  repetitive_lines           share of non-empty lines that repeat an earlier line
  repetitive_paragraphs      the same for paragraphs (blank-line separated)
  repetitive_ngrams          chars covered by the most frequent word n-gram, as a share of all word chars
  symbol_ratio               ('#' + ellipses + tokens with no letter or digit) per word
  blocklist                  a blocklist regex matches
PII masking is a repair, not a rejection: emails and phone numbers become [EMAIL] and [PHONE].
"""
from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache

from ..errors import WebtuneError

_SYMBOL_TOKEN = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w])")


@lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def dup_share(parts: list[str]) -> float:
    """Share of the non-empty parts that repeat an earlier one."""
    parts = [p for p in parts if p.strip()]
    if len(parts) < 2:
        return 0.0
    return 1.0 - len(set(parts)) / len(parts)


def top_ngram_share(words: list[str], n: int) -> float:
    """Chars covered by the most frequent word n-gram's occurrences / chars in all words (Gopher)."""
    if len(words) < n + 1:
        return 0.0
    grams = Counter(zip(*(words[i:] for i in range(n))))
    count = max(grams.values())
    if count < 2:
        return 0.0
    gram = max(grams, key=grams.__getitem__)
    total = sum(map(len, words))
    return count * sum(map(len, gram)) / max(1, total)


def symbol_ratio(text: str, n_words: int) -> float:
    symbols = text.count("#") + text.count("...") + text.count("\u2026") + len(_SYMBOL_TOKEN.findall(text))
    return symbols / max(1, n_words)


def mask_pii(text: str) -> str:
    if "@" in text:
        text = _EMAIL.sub("[EMAIL]", text)
    return _PHONE.sub("[PHONE]", text)


_GLOBAL_FLAGS = re.compile(r"^\(\?([aiLmsux]+)\)")


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise WebtuneError(f"prepare.filters.blocklist: {pattern!r} is not a valid regex ({e})") from None


def _scoped(pattern: str) -> str:
    """`(?i)abc` -> `(?i:abc)`, so patterns with leading global flags can share one alternation."""
    m = _GLOBAL_FLAGS.match(pattern)
    return f"(?{m.group(1)}:{pattern[m.end():]})" if m else f"(?:{pattern})"


class Filters:
    """`check(fields, text)` -> None if the record passes, else (reason, detail)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.required = list(cfg.required or [])
        self.languages = set(cfg.languages or [])
        self.blocklist = [_compile(p) for p in (cfg.blocklist or [])]
        # one alternation finds whether any pattern matches in a single pass; the loop names which
        self._any_block = re.compile("|".join(map(_scoped, cfg.blocklist))) if self.blocklist else None
        if self.languages:
            _language_identifier()
        self.need_words = bool(cfg.min_words or cfg.max_words or cfg.max_top_ngram_share < 1.0
                               or cfg.max_symbol_word_ratio < 1.0)

    def check(self, fields: dict, text: str) -> tuple[str, str] | None:
        c = self.cfg
        for name in self.required:
            value = fields.get(name)
            if value is None or (isinstance(value, (str, list, dict)) and not value):
                return "missing_required", f"required field {name!r} is missing or empty"
        n_chars = len(text)
        if c.min_chars and n_chars < c.min_chars:
            return "too_short", f"{n_chars} chars < min_chars {c.min_chars}"
        if c.max_chars and n_chars > c.max_chars:
            return "too_long", f"{n_chars} chars > max_chars {c.max_chars}"
        words = text.split() if self.need_words else None
        if words is not None:
            if c.min_words and len(words) < c.min_words:
                return "too_short", f"{len(words)} words < min_words {c.min_words}"
            if c.max_words and len(words) > c.max_words:
                return "too_long", f"{len(words)} words > max_words {c.max_words}"
        if c.max_dup_line_share < 1.0 and "\n" in text:
            share = dup_share(text.split("\n"))
            if share > c.max_dup_line_share:
                return "repetitive_lines", f"{share:.2f} of lines repeat > max_dup_line_share {c.max_dup_line_share}"
        if c.max_dup_para_share < 1.0 and "\n\n" in text:
            share = dup_share(text.split("\n\n"))
            if share > c.max_dup_para_share:
                return "repetitive_paragraphs", (f"{share:.2f} of paragraphs repeat > max_dup_para_share "
                                                 f"{c.max_dup_para_share}")
        if c.max_top_ngram_share < 1.0:
            share = top_ngram_share(words, c.top_ngram_n)
            if share > c.max_top_ngram_share:
                return "repetitive_ngrams", (f"top {c.top_ngram_n}-gram covers {share:.2f} of the text > "
                                             f"max_top_ngram_share {c.max_top_ngram_share}")
        if c.max_symbol_word_ratio < 1.0:
            ratio = symbol_ratio(text, len(words))
            if ratio > c.max_symbol_word_ratio:
                return "symbol_ratio", f"{ratio:.2f} symbols per word > max_symbol_word_ratio {c.max_symbol_word_ratio}"
        if self._any_block is not None and self._any_block.search(text):
            pattern = next(p.pattern for p in self.blocklist if p.search(text))
            return "blocklist", f"matches blocklist pattern {pattern!r}"
        if self.languages:
            lang, prob = _language_identifier().classify(text.replace("\n", " "))
            if lang not in self.languages or prob < c.language_confidence:
                return "language", (f"detected {lang} ({prob:.2f}), allowed {sorted(self.languages)} with "
                                    f"confidence >= {c.language_confidence}")
        return None
