"""HTML main-content extraction, as a files source, on gen_pages.py output and hand-made pages."""
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from webtune.config import FilesConfig
from webtune.records import Record, Rejection
from webtune.sources import files, html

GEN_PAGES = Path(__file__).resolve().parents[2] / "bench/gen/gen_pages.py"
BOILERPLATE = ["Accept all cookies", "Subscribe to our newsletter", "All rights reserved",
               "Follow us on social media", "Skip to main content", "Related articles"]


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    if not GEN_PAGES.exists():
        pytest.skip(f"{GEN_PAGES} not found")
    out = tmp_path_factory.mktemp("pages")
    subprocess.run([sys.executable, str(GEN_PAGES), "html", "--n", "80", "--seed", "3", "--out", str(out)], check=True)
    manifest = {m["file"]: m for m in map(json.loads, open(out / "MANIFEST.jsonl"))}
    cfg = OmegaConf.structured(FilesConfig(paths=[str(out / "*.html")]))
    got = {x.id: x for x in files.iter_records(cfg, "docs", files.resolve(cfg))}
    return SimpleNamespace(manifest=manifest, got=got, folder=out)


def test_clean_pages_keep_the_article_and_drop_the_boilerplate(pages):
    manifest, got = pages.manifest, pages.got
    clean = [m for m in manifest.values() if m["kind"] == "clean"]
    assert len(clean) > 60
    for m in clean:
        rec = got[f"docs:{m['file']}#1"]
        assert isinstance(rec, Record)
        assert m["first_sentence"] in rec.fields["text"], m["file"]
        assert not [b for b in BOILERPLATE if b in rec.fields["text"]], m["file"]
        assert rec.fields["title"] and rec.fields["file"] == m["file"]


def test_every_page_is_a_record_or_a_rejection_with_a_reason(pages):
    manifest, got = pages.manifest, pages.got
    assert len(got) == len(manifest)
    assert {m["kind"] for m in manifest.values()} == {  # seed 3 draws every kind: each branch below runs
        "clean", "broken:empty_body", "broken:script_only", "broken:cp1252", "broken:unclosed_tags"}
    for m in manifest.values():
        item = got[f"docs:{m['file']}#1"]
        if m["kind"] in ("broken:empty_body", "broken:script_only"):
            assert isinstance(item, Rejection) and item.reason == "no_main_content"
            assert m["file"] in item.detail
        elif m["kind"] == "broken:cp1252":  # the declared charset is honoured: no mojibake
            assert isinstance(item, Record)
            assert "café “quoted”" in item.fields["text"] and "Ã" not in item.fields["text"]
        elif m["kind"] == "broken:unclosed_tags":  # repaired by the parser: the text survives
            assert isinstance(item, Record) and m["first_sentence"] in item.fields["text"]


def page(body: str, head: str = "") -> str:
    return (f"<html><head>{head}<title>T</title></head><body><nav>Menu Home About</nav><article>"
            f"<h1>Heading</h1><p>{body}</p><p>{body}</p></article><footer>All rights reserved</footer></body></html>")


def test_windows_1252_declared_in_meta_is_decoded_as_such():
    text = "Le café “Zoë” coûte 3 € à Paris, dit l’article, et c’est très bien pour tout le monde ici."
    data = page(text, "<meta http-equiv='Content-Type' content='text/html; charset=windows-1252'>").encode("cp1252")
    got = html.extract(data)
    assert text in got.fields["text"] and not got.repairs
    # ISO-8859-1 is read as windows-1252, as browsers do, so curly quotes and € survive
    data = page(text, "<meta charset='ISO-8859-1'>").encode("cp1252")
    assert text in html.extract(data).fields["text"]


def test_undeclared_non_utf8_is_read_as_windows_1252_and_noted():
    text = "Un résumé “complet” du café de la gare, avec assez de mots pour être le contenu principal ici."
    got = html.extract(page(text).encode("cp1252"))
    assert text in got.fields["text"]
    assert got.repairs and got.repairs[0].startswith("charset_guessed")


def test_http_header_charset_wins_over_a_wrong_meta():
    text = "Grüße aus Köln: die Straße ist schön, und das Wetter ist heute wirklich außergewöhnlich gut."
    data = page(text, "<meta charset='utf-8'>").encode("cp1252")
    assert text in html.extract(data, header_charset="windows-1252").fields["text"]


def test_metadata_and_url():
    head = ("<meta name='description' content='A page about chairs'>"
            "<meta property='article:published_time' content='2025-03-04'>")
    got = html.extract(page("Chairs are furniture for sitting, made of wood, metal or plastic, in many styles.", head)
                       .encode(), url="https://example.com/chairs")
    assert got.fields["url"] == "https://example.com/chairs"
    assert got.fields["description"] == "A page about chairs"
    assert got.fields["date"] == "2025-03-04"
    assert "All rights reserved" not in got.fields["text"]


@pytest.mark.parametrize("data,reason", [
    (b"", "empty_file"),
    (b"<html><body><script>var a = 1;</script></body></html>", "no_main_content"),
    (b"\x00\x01\x02\xff\xfe garbage", "no_main_content"),
    (b"<html><body><div><p>", "no_main_content"),
])
def test_broken_pages_are_rejected_with_a_reason(data, reason):
    got = html.extract(data)
    assert got.fields is None and got.reason == reason and got.detail


def test_oversized_page_is_rejected(tmp_path):
    (tmp_path / "big.html").write_text(page("word " * 5000))
    cfg = OmegaConf.structured(FilesConfig(paths=[str(tmp_path / "big.html")], max_record_bytes=10_000))
    [item] = files.iter_records(cfg, "docs", files.resolve(cfg))
    assert item.reason == "too_large" and "big.html" in item.detail


def test_html_files_are_dealt_out_to_shards_by_file(pages):
    got, folder = pages.got, pages.folder
    cfg = OmegaConf.structured(FilesConfig(paths=[str(folder / "*.html")]))
    paths = files.resolve(cfg)
    parts = [[x.id for x in files.iter_records(cfg, "docs", paths, s, 3)] for s in range(3)]
    assert sorted(i for p in parts for i in p) == sorted(got)
    assert all(len(p) >= len(got) // 3 for p in parts)


def rendered(template: str, fields: dict) -> dict:
    """Each task of a shipped template on these fields: its messages, or why it does not apply."""
    from webtune.hydra_setup import compose
    from webtune.prepare.render import load_tasks
    from webtune.prepare.validate import Invalid

    out = {}
    for task in load_tasks(compose([f"template={template}"]).template):
        f = dict(fields)
        try:
            task.check(f)
            out[task.name] = task.render(f)
        except Invalid as e:
            out[task.name] = e.reason
    return out


def test_docs_qa_template_renders_extracted_pages(pages):
    clean = [m for m in pages.manifest.values() if m["kind"] == "clean"][:5]
    for m in clean:
        rec = pages.got[f"docs:{m['file']}#1"]
        got = rendered("docs_qa", rec.fields)
        answer, summary = got["docs_answer"], got["docs_summary"]
        assert [x["role"] for x in answer] == ["system", "user", "assistant"]
        assert rec.fields["title"] in answer[1]["content"]
        assert answer[2]["content"].startswith(m["first_sentence"])   # the title line is not repeated
        assert summary[2]["content"].startswith(m["first_sentence"])
        assert m["first_sentence"] not in summary[1]["content"]        # the answer is not in the prompt


# ---------------------------------------------------------------- real doc generators' pages
# tests/fixtures/pages: trimmed real pages (SQLite docs: public domain; Python docs: PSF licence;
# mkdocs-literate-nav's MkDocs Material docs and argparse4j's Javadoc: MIT) and one of our own.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/pages"
GENERATORS = {  # page: (its title, its headings below the title, text that is chrome, not content)
    "sqlite_deterministic.html": ("Deterministic SQL Functions", [
        "Overview", "Restrictions on the use of non-deterministic functions",
        "Special-case Processing For Date/Time Functions"], ["Choose any three", "last modified", "Search Changelog"]),
    "python_copy.html": ("copy — Shallow and deep copy operations", [
        "`copy.copy(x)`", "`copy.deepcopy(x[, memo])`", "`exception copy.Error`"],
        ["Previous topic", "Navigation", "Last updated on", "Created using", "Please donate"]),
    "mkdocs_reference.html": ("Reference", ["Literate nav syntax", "Explicit nav mark", "Nav list syntax", "Wildcards",
                                            "Subdirectory cross-link"], ["Made with", "Overview"]),
    "javadoc_argumentparser.html": ("Interface ArgumentParser", ["Method Detail", "addArgument", "addArgumentGroup"],
                                    ["Skip navigation", "All Classes", "Copyright"]),
    "plain_lists.html": ("Backups", ["Schedules", "Settings"], ["Home", "All rights reserved", "Last updated"]),
}


def list_items(path: Path) -> list[str]:
    """The page's own list items' text (their nested lists apart), outside its navigation."""
    import lxml.html

    tree = lxml.html.fromstring(path.read_bytes())
    for chrome in tree.xpath("//nav | //footer | //*[contains(@class, 'related') or contains(@class, 'sphinxsidebar')"
                             " or contains(@class, 'menu') or contains(@class, 'md-')][not(self::article)]"):
        if not chrome.xpath(".//article"):
            chrome.drop_tree()
    items = []
    for li in tree.xpath("//li | //dd"):
        for nested in li.xpath("./ul | ./ol | ./dl"):
            nested.drop_tree()
        text = " ".join(li.text_content().split())
        if len(text.split()) >= 3:
            items.append(text)
    return items


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_real_doc_pages_keep_their_title_headings_and_no_chrome(name):
    title, headings, chrome = GENERATORS[name]
    got = html.extract((FIXTURES / name).read_bytes()).fields
    assert got["title"] == title
    found = [h["title"] for h in got["headings"]]
    assert all(h in found for h in headings), found
    assert not [c for c in chrome if c in got["text"]]


@pytest.mark.parametrize("name", ["plain_lists.html", "sqlite_deterministic.html", "python_copy.html"])
def test_every_list_item_reaches_the_text(name):
    items = list_items(FIXTURES / name)
    assert len(items) >= 4
    text = " ".join(html.extract((FIXTURES / name).read_bytes()).fields["text"].replace("*", "").replace("`", "").split())
    assert [i for i in items if i not in text] == []


def test_nested_lists_and_definition_lists_keep_their_shape():
    text = html.extract((FIXTURES / "plain_lists.html").read_bytes()).fields["text"]
    assert ("- People delete the wrong table.\n  - Sometimes on purpose.\n  - Mostly by accident, late on a Friday.\n"
            "- An upgrade can go wrong halfway.") in text
    assert "1. Hourly snapshots, kept for two days.\n2. Daily full copies" in text
    assert "How many days a copy is kept before it is deleted." in text


def docs_sections(path: Path, **pages_cfg) -> list[Record]:
    from webtune.config import PagesConfig
    cfg = OmegaConf.structured(FilesConfig(paths=[str(path)]))
    pages_cfg = OmegaConf.structured(PagesConfig(**{"split": "section", "min_chars": 200, "max_chars": 1200, **pages_cfg}))
    got = list(files.iter_records(cfg, "docs", files.resolve(cfg), pages=pages_cfg))
    assert all(isinstance(r, Record) for r in got)
    return got


def test_a_page_whose_extractor_loses_its_headings_is_sectioned_by_them():
    # trafilatura alone returns none of this SQLite page's <h1>/<h2> (numbered "1. Overview")
    got = docs_sections(FIXTURES / "sqlite_deterministic.html", min_chars=0)
    assert [r.fields["section_title"] for r in got] == [
        "Overview", "Restrictions on the use of non-deterministic functions",
        "Special-case Processing For Date/Time Functions"]
    assert {r.fields["sectioned_by"] for r in got} == {"headings"}
    assert {r.fields["page_title"] for r in got} == {"Deterministic SQL Functions"}
    assert got[1].fields["text"].startswith("There are some contexts")
    assert "- In the WHERE clause of a partial index." in got[1].fields["text"]


def test_a_page_without_headings_says_it_was_cut_by_size(tmp_path):
    body = "".join(f"<p>{'Backups run every hour and are kept for two days by default. ' * 12} ({i})</p>" for i in range(6))
    (tmp_path / "flat.html").write_text(f"<html><head><title>Flat</title></head><body><article>{body}</article></body></html>")
    got = docs_sections(tmp_path / "flat.html")
    assert len(got) > 1 and {r.fields["sectioned_by"] for r in got} == {"size"}
    assert {r.fields["sections"] for r in got} == {len(got)}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_no_section_ends_with_another_heading_or_a_footer(name):
    from webtune.prose import blocks
    all_headings = {h.strip("`") for h in GENERATORS[name][1]} | {GENERATORS[name][0]}
    for r in docs_sections(FIXTURES / name):
        last = blocks(r.fields["text"])[-1]
        assert last.kind != "heading", r.id
        assert last.text.strip("*_`# ") not in all_headings, r.id
        assert not re.search(r"(?i)last (modified|updated)|©|copyright|made with", last.text), r.id


def test_a_title_cased_heading_is_not_taken_for_a_gerund():
    fields = {"title": "CREATE INDEX", "page_title": "CREATE INDEX", "section_title": "Descending Indexes",
              "section_path": ["CREATE INDEX", "Descending Indexes"], "level": 2, "text": "Each column name " * 5}
    question = rendered("docs_qa", fields)["docs_answer"][1]["content"]
    assert question == "In “CREATE INDEX”, what does the documentation say about “Descending Indexes”?"
