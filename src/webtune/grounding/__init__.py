"""Grounding: what a text states that its source does not (values, attribute values, PARENT).

    vocab = Vocabulary.fit(records)          # each field's values, learnt over the whole corpus
    f = check(text, source, vocab=vocab)     # source: the prompt's text, or the record's fields
    f.spans, f.unsupported_values, f.unsupported_attributes, f.coverage, f.parent

Used by prepare on training targets (`prepare.grounding`) and by evaluate on generated answers.
"""
from .check import Finding, Span, check, coverage
from .vocabulary import Vocabulary, VocabularyCounts

__all__ = ["Finding", "Span", "Vocabulary", "VocabularyCounts", "check", "coverage"]
