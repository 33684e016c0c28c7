"""Cleaning repairs: mojibake, HTML inside a field, whitespace; clean text is left alone."""
from types import SimpleNamespace

from webtune.prepare.clean import Cleaner, html_to_text, normalize_whitespace


def cleaner(**kw):
    cfg = dict(fix_unicode=True, strip_html=True, normalize_whitespace=True, fields=[])
    cfg.update(kw)
    return Cleaner(SimpleNamespace(**cfg))


def test_mojibake_is_repaired_and_reported():
    fields = {"description": "Caf\u00c3\u00a9 quality, the chair\u00e2\u20ac\u2122s best."}
    repairs = cleaner().clean(fields)
    assert fields["description"] == "Caf\u00e9 quality, the chair\u2019s best."
    assert repairs == {"mojibake_fixed": ["description"]}


def test_html_markup_becomes_text_without_scripts():
    fields = {"description": "<div class='a'><p>First line.</p><p>Second &amp; last.</p>"
                             "<script>var x=1;</script><br/>more&nbsp;info</div>", "title": "Plain"}
    repairs = cleaner().clean(fields)
    text = fields["description"]
    assert "var x" not in text and "<" not in text
    assert [line for line in text.split("\n") if line] == ["First line.", "Second & last.", "more info"]
    assert repairs == {"html_stripped": ["description"]}
    assert fields["title"] == "Plain"


def test_entities_alone_are_unescaped():
    assert html_to_text("Tom &amp; Jerry &#39;s") == "Tom & Jerry 's"


def test_whitespace_normalised_and_lists_cleaned():
    fields = {"features": ["  two   spaces\t\there ", "ok"], "n": 3, "missing": None}
    repairs = cleaner().clean(fields)
    assert fields["features"] == ["two spaces here", "ok"]
    assert fields["n"] == 3 and repairs == {}
    assert normalize_whitespace("a\r\n\n\n\nb  \n c") == "a\n\nb\nc"


def test_clean_ascii_text_untouched_and_only_configured_fields():
    text = "A clean sentence. Another one."
    fields = {"description": text, "title": "<b>bold</b>"}
    repairs = cleaner(fields=["description"]).clean(fields)
    assert fields == {"description": text, "title": "<b>bold</b>"} and repairs == {}


def test_repairs_can_be_switched_off():
    fields = {"description": "<p>x</p>  Caf\u00c3\u00a9"}
    assert cleaner(fix_unicode=False, strip_html=False, normalize_whitespace=False).clean(fields) == {}
    assert fields["description"] == "<p>x</p>  Caf\u00c3\u00a9"


MARKDOWN = ("Run `prog -m <mode>` as shown:\n\n- **-m <mode>**: the mode,  one of two\n\n  Note\n\n  ```\n"
            "  if mode:\n      run(mode)   # <b> stays\n\n  done()\n  ```\n\nA <b>bold</b> claim.   ")


def test_a_page_s_markdown_keeps_its_literal_markup_code_and_indentation():
    fields = {"text": MARKDOWN, "text_format": "markdown"}  # as the HTML sources deliver it
    cleaner().clean(fields)
    assert fields["text"] == MARKDOWN.replace(",  one", ", one").rstrip()  # only the double space and the end
    plain = {"text": MARKDOWN}  # the same text in any other record: markup outside code is stripped
    repairs = cleaner().clean(plain)
    assert repairs == {"html_stripped": ["text"]} and "A bold claim." in plain["text"]
    assert "      run(mode)   # <b> stays\n\n  done()" in plain["text"]  # code is never touched
