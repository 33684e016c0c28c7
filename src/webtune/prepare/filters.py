"""Quality filters, each optional: the first one a record fails names the ledger reason.

Thresholds come from `prepare.filters` (FiltersConfig); the defaults there turn every filter off.
The repetition rules follow Gopher (Rae et al. 2021) as datatrove implements them, measured on
the record's main text:
  too_short / too_long       chars or words outside [min, max]
  language                   py3langid's top language not allowed, or below the confidence
  repetitive_lines           share of non-empty lines that repeat an earlier line (outside Markdown code blocks)
  repetitive_paragraphs      the same for paragraphs (blank-line separated)
  repetitive_ngrams          chars covered by the most frequent word n-gram, as a share of all word chars
                             (on normalised words: lower case, ASCII punctuation dropped; texts of
                             50 words or more, as Gopher's minimum document)
  symbol_ratio               ('#' + "..." runs + tokens with no letter or digit) per word
The word rules run on a whole batch of texts at once (words.py); `check` runs both halves on one.
  blocklist                  a blocklist regex matches
PII masking is a repair, not a rejection: emails and phone numbers become [EMAIL] and [PHONE].
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from ..errors import WebtuneError
from .clean import without_code
from ..textsig.words import Words, analyse

# Gopher's repetition statistics describe documents (its minimum is 50 words): in a one-line
# answer such as "The capital of Japan is Tokyo." any repeated pair of words is a large share.
NGRAM_MIN_WORDS = 50
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+?\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w])")


@lru_cache(maxsize=1)
def _language_identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


_MARKUP = re.compile(r"^[ \t>]*(?:#{1,6} |[-*+] |\d+[.)] |\|[-:| ]*\|?$)|(?<!\w)[*_`]+|[*_`]+(?!\w)|\|", re.M)


def prose_view(fields: dict, text: str) -> str:
    """What the quality rules judge in a page's Markdown (`text_format: markdown`): its prose,
    without code blocks and without the markup itself (`#` of headings, list markers, table
    pipes, emphasis), which the word rules would count as symbols. Other records: `text` as is."""
    if fields.get("text_format") != "markdown":
        return text
    return _MARKUP.sub(" ", without_code(text, spans=False))


def dup_share(parts: list[str]) -> float:
    """Share of the non-empty parts that repeat an earlier one."""
    parts = [p for p in parts if p.strip()]
    if len(parts) < 2:
        return 0.0
    return 1.0 - len(set(parts)) / len(parts)


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


_REGEX_SPECIALS = set(".^$*+?{}[]\\|()")


def _phrase(pattern: str) -> str | None:
    """`(?i)click here` -> "click here": a case-insensitive pattern that is only a literal phrase."""
    if pattern.startswith("(?i)") and not (set(pattern[4:]) & _REGEX_SPECIALS):
        return pattern[4:].lower()
    return None


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
        # case-insensitive phrases are a substring test on the lower-cased text (10x faster than re);
        # the other patterns share one alternation, so any match costs one pass; the loop names which
        self._phrases = [(p, _phrase(p)) for p in (cfg.blocklist or []) if _phrase(p)]
        regexes = [p for p in (cfg.blocklist or []) if not _phrase(p)]
        self._any_block = re.compile("|".join(map(_scoped, regexes))) if regexes else None
        if self.languages:
            _language_identifier()
        self.need_words = bool(cfg.min_words or cfg.max_words or cfg.max_top_ngram_share < 1.0
                               or cfg.max_symbol_word_ratio < 1.0)

    def check(self, fields: dict, text: str) -> tuple[str, str] | None:
        """One record: the record checks, then the word checks (the pipeline batches the latter)."""
        return self.check_record(fields, text) or (self.check_words(analyse([text]))[0] if self.need_words else None)

    def check_record(self, fields: dict, text: str) -> tuple[str, str] | None:
        """The checks that need no word split: required fields, chars, repeated lines and
        paragraphs, blocklist, language."""
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
        prose = without_code(text, spans=False) if (c.max_dup_line_share < 1.0 or c.max_dup_para_share < 1.0) else text
        if c.max_dup_line_share < 1.0 and "\n" in prose:
            share = dup_share(prose.split("\n"))
            if share > c.max_dup_line_share:
                return "repetitive_lines", f"{share:.2f} of lines repeat > max_dup_line_share {c.max_dup_line_share}"
        if c.max_dup_para_share < 1.0 and "\n\n" in prose:
            share = dup_share(prose.split("\n\n"))
            if share > c.max_dup_para_share:
                return "repetitive_paragraphs", (f"{share:.2f} of paragraphs repeat > max_dup_para_share "
                                                 f"{c.max_dup_para_share}")
        if self._phrases:
            lower = text.lower()
            for pattern, phrase in self._phrases:
                if phrase in lower:
                    return "blocklist", f"matches blocklist pattern {pattern!r}"
        if self._any_block is not None and self._any_block.search(text):
            pattern = next(p.pattern for p in self.blocklist if p.search(text))
            return "blocklist", f"matches blocklist pattern {pattern!r}"
        if self.languages:
            lang, prob = _language_identifier().classify(text.replace("\n", " "))
            if lang not in self.languages or prob < c.language_confidence:
                return "language", (f"detected {lang} ({prob:.2f}), allowed {sorted(self.languages)} with "
                                    f"confidence >= {c.language_confidence}")
        return None

    def check_words(self, words: Words) -> list[tuple[str, str] | None]:
        """The word checks for a batch of texts at once: word counts, top n-gram share, symbol ratio."""
        c = self.cfg
        out: list[tuple[str, str] | None] = [None] * len(words.counts)
        if not self.need_words:
            return out
        tokens = words.tokens
        share = words.top_ngram_share(c.top_ngram_n) if c.max_top_ngram_share < 1.0 else None
        ratio = words.symbols / np.maximum(tokens, 1)
        bad = np.zeros(len(tokens), dtype=bool)
        if c.min_words:
            bad |= tokens < c.min_words
        if c.max_words:
            bad |= tokens > c.max_words
        if share is not None:
            share[tokens < NGRAM_MIN_WORDS] = 0.0
            bad |= share > c.max_top_ngram_share
        if c.max_symbol_word_ratio < 1.0:
            bad |= ratio > c.max_symbol_word_ratio
        for i in np.flatnonzero(bad).tolist():
            n = int(tokens[i])
            if c.min_words and n < c.min_words:
                out[i] = ("too_short", f"{n} words < min_words {c.min_words}")
            elif c.max_words and n > c.max_words:
                out[i] = ("too_long", f"{n} words > max_words {c.max_words}")
            elif share is not None and share[i] > c.max_top_ngram_share:
                out[i] = ("repetitive_ngrams", f"top {c.top_ngram_n}-gram covers {share[i]:.2f} of the text > "
                                               f"max_top_ngram_share {c.max_top_ngram_share}")
            else:
                out[i] = ("symbol_ratio", f"{ratio[i]:.2f} symbols per word > max_symbol_word_ratio "
                                          f"{c.max_symbol_word_ratio}")
        return out
