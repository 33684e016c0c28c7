"""Pages as Markdown and as sections: small hand-written pages, one per rule, read through the
files source (real trafilatura, markdown-it and sentencex; no mocks)."""
import re
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from webtune.config import FilesConfig, PagesConfig
from webtune.errors import WebtuneError
from webtune.prose import blocks, ends_sentence
from webtune.records import Record
from webtune.sources import files, html, pages

WORDS = ("the parser reads each option and stores its value so that later code can use it without "
         "parsing the command line again").split()


def sentence(i: int, n: int = 14) -> str:
    words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(n)]
    return " ".join(words).capitalize() + f" (case {i})."


def paragraph(i: int, n: int = 4) -> str:
    return " ".join(sentence(i * 10 + k) for k in range(n))


def page(body: str, title: str = "argparse — Parser for options — Python 3.11 documentation") -> bytes:
    return (f"<html><head><meta charset='utf-8'><title>{title}</title></head><body>"
            f"<nav><ul><li><a href='/'>Home</a></li><li><a href='/lib'>Library</a></li></ul></nav>"
            f"<main><article>{body}</article></main><footer>© 2026 The authors. All rights reserved.</footer>"
            f"</body></html>").encode()


def records(tmp_path, data: bytes, name: str = "page.html", **pages_cfg):
    path = tmp_path / name
    path.write_bytes(data)
    cfg = OmegaConf.structured(FilesConfig(paths=[str(path)]))
    got = list(files.iter_records(cfg, "docs", files.resolve(cfg),
                                  pages=OmegaConf.structured(PagesConfig(**{"split": "section", **pages_cfg}))))
    assert all(isinstance(r, Record) for r in got), got
    return got


def h(level: int, text: str) -> str:
    return f"<h{level}>{text}<a class='headerlink' href='#x' title='Permalink to this heading'>¶</a></h{level}>"


def test_nested_headings_become_sections_with_their_trail(tmp_path):
    body = (h(1, "<code>argparse</code> — Parser for options") + f"<p>{paragraph(1)}</p>"
            + h(2, "Tutorial") + h(3, "Creating a parser") + f"<p>{paragraph(2)}</p>"
            + h(3, "Adding arguments") + f"<p>{paragraph(3)}</p>"
            + h(2, "Reference") + f"<p>{paragraph(4)}</p>" + h(4, "Deep detail") + f"<p>{paragraph(5)}</p>")
    got = records(tmp_path, page(body), min_chars=0)
    assert [r.id for r in got] == [f"docs:page.html#1/s{n}" for n in range(1, 6)]
    title = "argparse — Parser for options"  # no ¶, no " — Python 3.11 documentation"
    assert [r.fields["section_path"] for r in got] == [
        [title], [title, "Tutorial", "Creating a parser"], [title, "Tutorial", "Adding arguments"],
        [title, "Reference"], [title, "Reference", "Deep detail"]]
    assert [r.fields["level"] for r in got] == [1, 3, 3, 2, 4]
    assert {r.fields["page_title"] for r in got} == {title} and {r.group for r in got} == {"docs:page.html#1"}
    assert got[1].fields["text"] == paragraph(2)  # re-flowed, without its heading
    assert not any("¶" in str(r.fields) for r in got)
    assert got[0].fields["lead"] == paragraph(1)  # a real lead paragraph: the summary task's answer


def test_code_inside_a_list_keeps_its_indentation_and_blank_lines(tmp_path):
    code = "def greet(name):\n    if name:\n        print('Hello', name)\n\n    return None"
    body = (h(1, "Greeting") + f"<p>{paragraph(1)}</p><ul><li><p>First install it:</p>"
            f"<pre>pip install greet\n    --user</pre></li><li><p>Then write:</p><pre>{code}</pre></li></ul>")
    text = html.extract(page(body)).fields["text"]
    assert "- First install it:\n\n  ```\n  pip install greet\n      --user\n  ```" in text
    fenced = re.search(r"  ```\n(.*?)\n  ```$", text, re.S | re.M)
    assert [b.kind for b in blocks(text)][-1] == "bullet_list"  # the code stays inside its item
    last = text.split("- Then write:\n\n")[1]
    assert "\n".join(line[2:] for line in last.split("\n")[1:-1]) == code, fenced


def test_a_table_is_a_markdown_table_and_never_cut(tmp_path):
    rows = "".join(f"<tr><td>opt{i}</td><td>{sentence(i)}</td></tr>" for i in range(40))
    body = (h(1, "Options") + f"<p>{paragraph(1)}</p>" + h(2, "All options")
            + f"<table><tr><th>Name</th><th>Meaning</th></tr>{rows}</table>")
    got = records(tmp_path, page(body), max_chars=1000)
    table = next(r.fields["text"] for r in got if r.fields["section_title"] == "All options")
    lines = table.split("\n")
    assert lines[:3] == ["| Name | Meaning |", "|---|---|", f"| opt0 | {sentence(0)} |"]
    assert len(lines) == 42 and len(table) > 1000  # longer than max_chars: a table is not cut


def test_a_page_without_headings_is_one_section_titled_by_the_page(tmp_path):
    body = "".join(f"<p>{paragraph(i)}</p>" for i in range(3))
    got = records(tmp_path, page(body, title="Release notes | Acme Docs"))
    assert len(got) == 1
    f = got[0].fields
    assert f["section_title"] == f["page_title"] == "Release notes" and f["section_path"] == ["Release notes"]
    assert f["text"] == "\n\n".join(paragraph(i) for i in range(3))


def test_a_60000_character_page_is_split_at_boundaries_and_loses_nothing(tmp_path):
    sections = []
    for s in range(14):
        paras = [f"<p>{paragraph(s * 40 + k, 5)}</p>" for k in range(9)]
        paras.insert(4, "<pre>for key, value in options.items():\n    print(key, '=', value)</pre>")
        sections.append(h(2, f"Topic {s}") + "".join(paras))
    huge = f"<p>{' '.join(sentence(9000 + k) for k in range(40))}</p>"  # one paragraph of ~4,000 chars
    data = page(h(1, "Options") + f"<p>{paragraph(0)}</p>" + "".join(sections) + h(2, "One long paragraph") + huge)
    text = html.extract(data).fields["text"]
    assert len(text) > 60_000
    got = records(tmp_path, data, max_chars=2000, min_chars=200)
    assert len(got) > 30 and [r.id for r in got] == [f"docs:page.html#1/s{n}" for n in range(1, len(got) + 1)]
    for r in got:
        t = r.fields["text"]
        assert len(t) <= 2000, r.id
        assert t in text, r.id  # a contiguous span of the page
        end = text.index(t) + len(t)
        assert end == len(text) or text[end:end + 2] == "\n\n" or ends_sentence(t, strict=True), r.id
        assert t.count("```") % 2 == 0, r.id  # never inside a code block
    assert "".join(r.fields["text"] for r in got).count("print(key, '=', value)") == 14
    parts = [r for r in got if r.fields["section_title"] == "One long paragraph"]
    assert len(parts) > 1 and [p.fields["part"] for p in parts] == list(range(1, len(parts) + 1))
    assert all(p.fields["text"].endswith(").") for p in parts)  # cut between sentences
    # prepare's length filter (max_chars 20,000 in the shipped config) rejects none of them
    from webtune.prepare.filters import Filters
    from webtune.config import FiltersConfig
    filters = Filters(SimpleNamespace(**vars(FiltersConfig(max_chars=20_000))))
    assert not [r.id for r in got if filters.check_record(r.fields, r.fields["text"])]


def test_tiny_sections_join_their_neighbour(tmp_path):
    body = (h(1, "Config") + f"<p>{paragraph(1)}</p>" + h(2, "Short") + "<p>Only this.</p>"
            + h(2, "Long") + f"<p>{paragraph(2)}</p>")
    got = records(tmp_path, page(body), min_chars=200, max_chars=2000)
    assert [r.fields["section_title"] for r in got] == ["Config", "Long"]
    assert got[0].fields["text"].endswith("## Short\n\nOnly this.")


def test_split_none_keeps_one_record_per_page(tmp_path):
    body = h(1, "Config") + f"<p>{paragraph(1)}</p>" + h(2, "Part") + f"<p>{paragraph(2)}</p>"
    got = records(tmp_path, page(body), split="none")
    assert [r.id for r in got] == ["docs:page.html#1"]
    assert got[0].fields["text"].startswith("# Config\n\n") and "## Part" in got[0].fields["text"]
    assert got[0].fields["headings"] == [{"level": 1, "title": "Config"}, {"level": 2, "title": "Part"}]


def test_api_entries_are_sections_of_their_own():
    body = (h(1, "os") + f"<p>{paragraph(1)}</p>" + h(2, "Files")
            + "<dl class='py function'><dt class='sig'><span class='sig-prename'>os.</span>"
              "<span class='sig-name'>access</span>(<em>path</em>, <em>mode</em>)"
              "<a class='headerlink' href='#os.access'>¶</a></dt>"
              f"<dd><p>{paragraph(2)}</p></dd></dl>")
    fields = html.extract(page(body)).fields
    assert "### `os.access(path, mode)`\n\n" + paragraph(2) in fields["text"]
    sections = pages.split(blocks(fields["text"]), fields["title"])
    assert sections[-1].path == ["os", "Files", "`os.access(path, mode)`"]


def test_bad_pages_settings_fail_in_one_line():
    with pytest.raises(WebtuneError, match=r"source.pages.split='sections' is not one of none, section"):
        pages.settings(SimpleNamespace(split="sections", min_chars=0, max_chars=0))
    with pytest.raises(WebtuneError, match="min_chars=500 is over max_chars=100"):
        pages.settings(OmegaConf.structured(PagesConfig(min_chars=500, max_chars=100)))


def test_a_lead_in_stays_with_the_code_it_introduces(tmp_path):
    body = h(1, "Usage") + "".join(f"<p>{paragraph(i, 3)}</p><p>For example:</p><pre>run --case {i}\n    --verbose</pre>"
                                   for i in range(12))
    got = records(tmp_path, page(body), max_chars=900, min_chars=0)
    assert len(got) > 3
    for r in got:
        assert not r.fields["text"].rstrip().endswith(":"), r.id
        assert r.fields["text"].count("For example:") == r.fields["text"].count("```") // 2, r.id


def test_the_urls_source_splits_fetched_pages_into_sections_too(tmp_path):
    from rich.console import Console

    from webtune.config import UrlsConfig
    from webtune.sources import urls
    from tests.fakes.web_server import FakeWeb

    site = tmp_path / "site"
    site.mkdir()
    body = h(1, "Guide") + f"<p>{paragraph(1)}</p>" + h(2, "Install") + f"<p>{paragraph(2)}</p>"
    (site / "guide.html").write_bytes(page(body))
    with FakeWeb(site, crawl_delay=None) as web:
        url = web.url("/pages/guide.html")
        cfg = OmegaConf.structured(UrlsConfig(urls=[url], cache_dir=str(tmp_path / "cache"), delay=0.0, timeout=5))
        paths = urls.acquire(cfg, "web", tmp_path / "raw", console=Console(quiet=True))
    got = list(urls.iter_records(cfg, "web", paths, pages=OmegaConf.structured(PagesConfig(split="section", min_chars=0))))
    assert [r.id for r in got] == [f"web:{url}#1/s1", f"web:{url}#1/s2"]
    assert [r.fields["section_title"] for r in got] == ["Guide", "Install"] and {r.group for r in got} == {url}
    assert got[1].fields["url"] == url and got[1].fields["text"] == paragraph(2)


# ---------------------------------------------------------------- the ledger shows sections
def folded_run(tmp_path):
    """A run directory whose ledger holds two pages' sections (kept, too_long, duplicate) and a record."""
    from webtune import ledger
    with ledger.LedgerWriter(tmp_path, "prepare") as w:
        w.kept("docs:a.html#1/s1", "docs", example_ids=["e1"])
        w.rejected("docs:a.html#1/s2", "docs", "too_long", "9,000 chars over 8,000")
        w.rejected("docs:a.html#1/s3", "docs", "exact_duplicate", duplicate_of="docs:b.html#1/s1")
        w.kept("docs:b.html#1/s1", "docs", example_ids=["e2"])
        w.rejected("docs:b.html#1/s2", "docs", "too_long", "12,000 chars")
        w.rejected("docs:c.html#1", "docs", "no_main_content", "empty body")
    ledger.fold(tmp_path, ["prepare"])
    return tmp_path


def ledger_cli(capsys, *args) -> str:
    from webtune.cli import main
    assert main(["ledger", *map(str, args)]) == 0
    return capsys.readouterr().out


def test_ledger_lists_the_sections_dropped_for_a_reason(tmp_path, capsys):
    run = folded_run(tmp_path)
    out = ledger_cli(capsys, run, "--reason", "too_long").splitlines()
    assert [line.split()[0] for line in out] == ["docs:a.html#1/s2", "docs:b.html#1/s2"]
    assert "prepare:too_long - 9,000 chars over 8,000" in out[0]
    out = ledger_cli(capsys, run, "--reason", "duplicate")
    assert "docs:a.html#1/s3" in out and "duplicate_of=docs:b.html#1/s1" in out


def test_ledger_shows_a_page_and_its_sections_or_one_section(tmp_path, capsys):
    run = folded_run(tmp_path)
    out = ledger_cli(capsys, run, "--page", "a.html").splitlines()
    assert [line.split()[:2] for line in out] == [["docs:a.html#1", "kept"], ["docs:a.html#1/s1", "kept"],
                                                  ["docs:a.html#1/s2", "rejected"], ["docs:a.html#1/s3", "rejected"]]
    out = ledger_cli(capsys, run, "--section", "docs:b.html#1/s2").splitlines()
    assert len(out) == 1 and out[0].startswith("docs:b.html#1/s2  rejected  prepare:too_long")
    out = ledger_cli(capsys, run, "--reason", "no_main_content")
    assert out.startswith("docs:c.html#1  rejected")   # a page without sections is its own line


def test_ledger_summary_counts_rejected_sections(tmp_path, capsys):
    from webtune.ledger import read_ledger, summarize_sections
    run = folded_run(tmp_path)
    got = summarize_sections(read_ledger(run))
    assert got["sources"] == {"docs": {"pages": 2, "sections": 5, "kept": 2, "rejected": 3}}
    assert {(r["reason"], r["count"]) for r in got["reasons"]} == {("too_long", 2), ("exact_duplicate", 1)}
    from webtune.cli import main
    assert main(["ledger", str(run)]) == 0
    out = capsys.readouterr()
    assert "rejected sections by reason" in out.out + out.err and "too_long" in out.out + out.err


def test_prepare_and_the_report_say_how_pages_were_cut(tmp_path):
    """prepare counts the pages cut at their headings and by size; the report shows them with the
    sections the ledger dropped (a page's own line is kept while any section is)."""
    import json
    import shutil
    from pathlib import Path

    from webtune import ledger, sources
    from webtune.hydra_setup import compose
    from webtune.prepare.pipeline import PrepareInput, run
    from webtune.report import stage

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(Path(__file__).parents[1] / "fixtures/pages/sqlite_deterministic.html", site)
    (site / "flat.html").write_bytes(page("".join(f"<p>{paragraph(i)}</p>" for i in range(8))))
    cfg = compose(["source=docs_pages", f"source.files.paths=[{site}/*.html]", "template=docs_qa",
                   "mix.general.enabled=false", "prepare.workers=1", "source.pages.max_chars=600"])
    run_dir = tmp_path / "run"
    stats = run(cfg, run_dir, [PrepareInput("domain", cfg.source, cfg.template, sorted(site.glob("*.html")),
                                            sources.iter_records)])
    got = stats["sources"]["docs"]
    assert (got["pages_by_headings"], got["pages_by_size"]) == (1, 1) and got["page_sections"] > 4
    folded = ledger.fold(run_dir, ["prepare"])
    assert folded["sections"]["sources"]["docs"]["pages"] == 2
    (run_dir / "stats").mkdir()
    (run_dir / "stats/prepare.json").write_text(json.dumps(stats))
    (run_dir / "stats/ledger.json").write_text(json.dumps(folded))
    html_text = stage.render(cfg, run_dir, stage.collect(run_dir))
    assert "Pages and their sections" in html_text and "cut by size only (no headings found)" in html_text
    assert f"{got['page_sections']} sections of 2 pages" in html_text
