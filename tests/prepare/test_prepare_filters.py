"""Each quality filter rejects with its own reason, and passes ordinary text."""
import pytest
from omegaconf import OmegaConf

from webtune.config import FiltersConfig
from webtune.errors import WebtuneError
from webtune.prepare.filters import Filters, mask_pii
from webtune.config import plain

from .conftest import words

GOOD = words(1, 80).capitalize() + "."


def check(text, fields=None, **cfg):
    return Filters(plain(OmegaConf.structured(FiltersConfig(**cfg)))).check(fields or {"t": text}, text)


GERMAN = "Dies ist ein gewöhnlicher deutscher Satz über einen bequemen Bürostuhl mit Armlehnen."


@pytest.mark.parametrize("cfg, text, reason, passing", [
    (dict(min_chars=50), "short text here", "too_short", GOOD),
    (dict(max_chars=20), GOOD, "too_long", "short text here"),
    (dict(min_words=5), "only four words here", "too_short", GOOD),
    (dict(max_words=10), GOOD, "too_long", "just five words right here"),
    (dict(max_dup_line_share=0.3), "same line\nsame line\nsame line\nother line", "repetitive_lines",
     "line one\nline two\nline three"),
    (dict(max_dup_para_share=0.3), "para one\n\npara one\n\npara one\n\npara two", "repetitive_paragraphs", GOOD),
    (dict(max_top_ngram_share=0.2), "lorem ipsum " * 30, "repetitive_ngrams", GOOD),
    (dict(max_top_ngram_share=0.2), "the capital of Japan is Tokyo and the capital of Peru is Lima", None, None),
    (dict(max_symbol_word_ratio=0.1), "$$$ BEST DEAL $$$ " * 10, "symbol_ratio", GOOD),
    (dict(blocklist=["(?i)click here to buy", "casino"]), GOOD + " CLICK HERE to buy now", "blocklist", GOOD),
    (dict(languages=["de"], language_confidence=0.5),
     "This is an ordinary English sentence about a comfortable office chair with armrests.", "language", GERMAN),
])
def test_each_filter_rejects_with_its_reason(cfg, text, reason, passing):
    if reason is None:  # a short answer repeats word pairs without being boilerplate
        assert check(text, **cfg) is None
        return
    verdict = check(text, **cfg)
    assert verdict is not None and verdict[0] == reason, verdict
    assert check(passing, **cfg) is None


def test_blocklist_detail_names_the_pattern():
    assert check("buy at the casino", blocklist=["(?i)lorem", "casino"]) == (
        "blocklist", "matches blocklist pattern 'casino'")


def test_required_fields():
    assert check(GOOD, fields={"title": ""}, required=["title"])[0] == "missing_required"
    assert check(GOOD, fields={"title": "x"}, required=["title"]) is None


def test_bad_blocklist_regex_is_a_clear_error():
    with pytest.raises(WebtuneError, match="blocklist.*'\\(unclosed'"):
        check(GOOD, blocklist=["(unclosed"])


def test_all_filters_off_by_default():
    assert check("x") is None


def test_pii_masking():
    assert mask_pii("Mail jane.doe@example.com or call +1 415-555-0134 today") == \
        "Mail [EMAIL] or call [PHONE] today"
    assert mask_pii("Model AB-1234 fits 2 people") == "Model AB-1234 fits 2 people"


def test_markdown_pages_are_judged_on_their_prose():
    from webtune.prepare.filters import prose_view
    table = "\n".join(["| Name | Meaning |", "|---|---|"] + [f"| `opt{i}` | {words(i, 6)} |" for i in range(12)])
    code = "```\n>>> x = 1\n>>> x = 1\n>>> x == 1\nTrue\n```"
    text = f"### `Options`\n\n{GOOD}\n\n{table}\n\n{code}\n\n- {words(3, 9)}\n- {words(4, 9)}"
    fields = {"text": text, "text_format": "markdown"}
    strict = dict(max_symbol_word_ratio=0.1, max_dup_line_share=0.1)
    assert check(text, **strict)[0] == "symbol_ratio"  # the markup and the code, read as prose
    view = prose_view(fields, text)
    assert check(view, fields, **strict) is None
    assert ">>>" not in view and "|" not in view and "###" not in view and "opt11" in view
    assert prose_view({"text": text}, text) == text  # any other record: judged as it is
