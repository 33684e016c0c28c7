#!/usr/bin/env python3
"""Web pages into training examples: structure kept, long pages split, nothing cut mid-sentence.

Two corpora: a real documentation set nobody here wrote (the first `--n` pages of Debian's
python3.11-doc library reference: `apt-get install python3.11-doc`) and `gen_pages.py html`
(article pages in boilerplate, a few broken). Each goes through the shipped `source=docs_pages
template=docs_qa` (sections on, `max_chars` as shipped) and the real prepare stage (clean,
filter, validate, render, dedupe) into examples. Measured against the source, not the output's
look:

  targets mid-sentence   an assistant target that is not a contiguous span of its record's text
                         ending at a block boundary or a sentence end of that text, or holds `…`
  sections mid-sentence  the same for each section against its page's text
  breaks in a sentence   paragraph breaks of the output whose two sides lie in one block element
                         of the source HTML, the first not ending a sentence
  code blocks kept       the page's <pre> texts found verbatim as a fenced block (indentation and
                         blank lines intact); `reshaped`: found only with white space changed
  ¶ left                 permalink signs in any output text

Beside it, in the same run, page by page in turns: plain `trafilatura.extract(html)` (text) and
`trafilatura.extract(html, output_format="markdown", include_formatting=True)` (its own Markdown).

  python bench/pages.py [--docs /usr/share/doc/python3.11/html/library] [--n 150] [--gen 200]
"""
from __future__ import annotations

import argparse
import collections
import glob
import html as htmllib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from webtune.prose import blocks, ends_sentence, sentence_ends

ROOT = Path(__file__).resolve().parents[1]
GEN_PAGES = ROOT / "bench/gen/gen_pages.py"
_FENCE = re.compile(r"^([ \t>]*)(`{3,}|~{3,})[^\n]*\n(.*?)\n\1\2[ \t]*$", re.M | re.S)
_MARKS = re.compile(r"[`*]")
_BREAKS = {"p", "li", "dd", "dt", "dl", "td", "th", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6",
           "caption", "figcaption", "div", "section", "article", "main", "aside", "nav", "header", "footer",
           "blockquote", "br", "hr", "figure", "form", "details", "summary", "thead", "tbody", "tfoot"}


# ---------------------------------------------------------------- the source's own units
def source_units(data: bytes) -> tuple[list[str], str]:
    """The page's <pre> texts, and its block elements' texts (flattened, joined by \\x00)."""
    import lxml.html

    tree = lxml.html.document_fromstring(data)
    pres = [p.text_content().strip("\n") for p in tree.iter("pre")]
    for p in list(tree.iter("pre")):
        p.drop_tree()
    return pres, "\x00".join(_plain(t) for t in _own_text(tree.find("body") if tree.find("body") is not None else tree))


def _own_text(el) -> list[str]:
    """The texts of the page's blocks, each without the blocks nested in it (they are their own)."""
    out, own = [], [el.text or ""]
    for child in el:
        if isinstance(child.tag, str) and child.tag in _BREAKS:
            out += _own_text(child)
            own.append("\x00")
        else:
            own.append(child.text_content() if isinstance(child.tag, str) else "")
        own.append(child.tail or "")
    return out + "".join(own).split("\x00")


def _plain(text: str) -> str:
    return " ".join(_MARKS.sub("", htmllib.unescape(text)).replace("¶", "").split())


def code_kept(pres: list[str], text: str) -> tuple[int, int]:
    """(verbatim, reshaped): <pre> texts found as a fenced block exactly / only up to white space."""
    fenced = set()
    for m in _FENCE.finditer(text or ""):
        prefix = m.group(1)
        fenced.add("\n".join(ln[len(prefix):] if ln.startswith(prefix) else ln.lstrip(" >")
                             for ln in m.group(3).split("\n")))
    loose = {" ".join(f.split()) for f in fenced}
    exact = sum(p in fenced for p in pres)
    return exact, sum(p not in fenced and " ".join(p.split()) in loose for p in pres)


def breaks_in_sentences(paragraphs: list[str], joined_source: str) -> tuple[int, int]:
    """(breaks, breaks inside a sentence of one source block) between consecutive paragraphs."""
    bad = 0
    for a, b in zip(paragraphs, paragraphs[1:]):
        tail, head = _plain(a)[-40:], _plain(b)[:40]
        if tail and head and not ends_sentence(_plain(a)) and f"{tail} {head}" in joined_source:
            bad += 1
    return max(len(paragraphs) - 1, 0), bad


def at_boundary(span: str, text: str) -> bool:
    """Is `span` a contiguous part of `text` ending at a block boundary or a sentence end of it?"""
    if "…" in span and "…" not in text:
        return False
    start = text.find(span)
    if start < 0:
        return False
    end = start + len(span)
    if end == len(text.rstrip()) or text.startswith("\n\n", end) or text.startswith("\n", end):
        return True
    para_start = text.rfind("\n\n", 0, end) + 2 if "\n\n" in text[:end] else 0
    para_end = text.find("\n\n", end)
    para = text[para_start:para_end if para_end >= 0 else len(text)]
    return any(abs(para_start + e - end) <= 1 for e in sentence_ends(para))


def prose_paragraphs(markdown: str) -> list[str]:
    return [b.text for b in blocks(markdown) if b.kind == "paragraph"]


# ---------------------------------------------------------------- our pipeline
def compose(paths: str):
    from webtune.hydra_setup import compose as hydra_compose
    return hydra_compose(["source=docs_pages", f"source.files.paths=[{paths}]", "template=docs_qa",
                          "mix.general.enabled=false", "prepare.workers=1"])


def prepare(cfg, paths: list[Path], tmp: Path) -> tuple[list[dict], dict]:
    """The real prepare stage on these pages: its examples, and each rejected record's reason."""
    from webtune import sources
    from webtune.prepare.pipeline import PrepareInput, run

    run_dir = tmp / "run"
    run(cfg, run_dir, [PrepareInput("domain", cfg.source, cfg.template, paths, sources.iter_records)])
    examples = [orjson.loads(line) for line in open(run_dir / "data/examples.jsonl", "rb")]
    reasons = {}
    for part in sorted((run_dir / "ledger/prepare").glob("*.jsonl")):
        for line in open(part, "rb"):
            e = orjson.loads(line)
            if e.get("status") == "rejected":
                reasons[e["id"]] = e.get("reason")
    return examples, reasons


def page_of(record_id: str) -> str:
    return record_id.split("/s", 1)[0] if "/s" in record_id.rsplit("#", 1)[-1] else record_id


def measure(name: str, paths: list[Path], console: Console) -> dict:
    import trafilatura
    from omegaconf import OmegaConf

    from webtune.records import Record
    from webtune.sources import files, html

    cfg = compose(",".join(str(p) for p in paths))
    pages_cfg = cfg.source.pages
    plain_cfg = OmegaConf.create(OmegaConf.to_container(cfg.source.files, resolve=True))
    for p in paths[:3]:  # trafilatura's one-time set-up (stoplists) falls on nobody
        html.extract(p.read_bytes()), trafilatura.extract(p.read_bytes())
    m = collections.Counter()
    spent = collections.Counter()
    records: dict[str, dict] = {}
    for path in paths:
        data = path.read_bytes()
        t0 = time.perf_counter()
        items = list(files.iter_records(plain_cfg, "docs", [path], pages=pages_cfg))
        t1 = time.perf_counter()
        peer_txt = trafilatura.extract(data) or ""
        t2 = time.perf_counter()
        peer_md = trafilatura.extract(data, output_format="markdown", include_formatting=True,
                                      include_tables=True) or ""
        t3 = time.perf_counter()
        spent["ours"] += t1 - t0
        spent["txt"] += t2 - t1
        spent["md"] += t3 - t2
        page = html.extract(data).fields  # the page's whole Markdown, to check the sections against
        pres, source = source_units(data)
        m["pages"] += 1
        m["pre"] += len(pres)
        for key, text, paras in (("ours", page and page["text"], prose_paragraphs(page["text"]) if page else []),
                                 ("txt", peer_txt, [ln for ln in peer_txt.split("\n") if ln.strip()]),
                                 ("md", peer_md, [p for p in peer_md.split("\n\n") if p.strip() and not p.startswith(("```", "|", "#", "-"))])):
            exact, reshaped = code_kept(pres, text or "")
            m[f"{key}_code"] += exact
            m[f"{key}_code_reshaped"] += reshaped
            n, bad = breaks_in_sentences(paras, source)
            m[f"{key}_breaks"] += n
            m[f"{key}_breaks_bad"] += bad
            m[f"{key}_pilcrow"] += (text or "").count("¶")
        for item in items:
            if isinstance(item, Record):
                records[item.id] = item.fields
                m["sections"] += 1
                m["ours_pilcrow"] += sum(str(item.fields.get(k) or "").count("¶")
                                         for k in ("title", "section_title", "text", "lead"))
                if page and not at_boundary(item.fields["text"], page["text"]):
                    m["sections_mid"] += 1
    examples, reasons = prepare(cfg, paths, Path(tempfile.mkdtemp(prefix="pages-", dir=TMP)))
    contributing = {page_of(e["record_id"]) for e in examples}
    chat = _chat(cfg)
    fits = collections.defaultdict(set)  # page -> does it have an example within mix.max_seq_len?
    for e in examples:
        if chat is not None:
            n = len(chat.encode(e["messages"])[0])
            m["tokens_over"] += n > cfg.mix.max_seq_len
            m["tokens_max"] = max(m["tokens_max"], n)
            fits[page_of(e["record_id"])].add(n <= cfg.mix.max_seq_len)
        target = e["messages"][-1]["content"]
        fields = records.get(e["record_id"], {})
        text = fields.get("text") or ""
        m["examples"] += 1
        m[f"examples_{e['template']}"] += 1
        if not at_boundary(target, text):
            m["targets_mid"] += 1
    rejected_pages = collections.Counter()
    for rid, reason in reasons.items():
        rejected_pages[(page_of(rid), reason)] += 1
    m["too_long_pages"] = sum(1 for (pid, r) in rejected_pages if r == "too_long" and pid not in contributing)
    m["contributing"] = len(contributing)
    m["contributing_fit"] = sum(1 for v in fits.values() if True in v)
    m["max_seq_len"] = cfg.mix.max_seq_len
    m["reasons"] = collections.Counter(reasons.values())
    m["seconds"] = spent
    return m


def _chat(cfg):
    """The shipped model's chat tokenizer, to count each example as mix will (None if unavailable)."""
    try:
        from webtune.chat.tokenize import ChatTokenizer
        return ChatTokenizer.for_model(cfg.model)
    except Exception as e:  # no model files here: the token columns stay empty
        print(f"no tokenizer for {cfg.model.name}: {type(e).__name__}: {e}")
        return None


def share(a: int, b: int) -> str:
    return f"{a / b:.1%}" if b else "-"


def table(name: str, m: dict) -> Table:
    t = Table(title=f"{name}: {m['pages']} pages")
    for col in ("measure", "webtune (docs_pages + docs_qa)", "trafilatura.extract (text)", "trafilatura markdown"):
        t.add_column(col)
    s = m["seconds"]
    t.add_row("sections out", f"{m['sections']:,}", "-", "-")
    t.add_row("examples out", f"{m['examples']:,} ({m['examples_docs_answer']:,} answer, "
                              f"{m['examples_docs_summary']:,} summary)", "-", "-")
    t.add_row("pages with ≥1 example", share(m["contributing"], m["pages"]), "-", "-")
    if m["tokens_max"]:
        t.add_row(f"examples over max_seq_len {m['max_seq_len']} (mix drops them)",
                  f"{share(m['tokens_over'], m['examples'])} (longest {m['tokens_max']:,} tokens)", "-", "-")
        t.add_row("pages with ≥1 example that fits", share(m["contributing_fit"], m["pages"]), "-", "-")
    t.add_row("pages rejected for length only", str(m["too_long_pages"]), "-", "-")
    t.add_row("targets mid-sentence or with …", share(m["targets_mid"], m["examples"]), "-", "-")
    t.add_row("sections ending mid-sentence", share(m["sections_mid"], m["sections"]), "-", "-")
    for key, col in (("breaks", "paragraph breaks inside a sentence"),):
        t.add_row(col, *[f"{share(m[f'{k}_{key}_bad'], m[f'{k}_{key}'])} of {m[f'{k}_{key}']:,}" for k in ("ours", "txt", "md")])
    t.add_row("code blocks verbatim", *[f"{m[f'{k}_code']:,} / {m['pre']:,}" for k in ("ours", "txt", "md")])
    t.add_row("code blocks with white space changed", *[f"{m[f'{k}_code_reshaped']:,}" for k in ("ours", "txt", "md")])
    t.add_row("¶ left", *[str(m[f"{k}_pilcrow"]) for k in ("ours", "txt", "md")])
    t.add_row("pages/s", *[f"{m['pages'] / s[k]:.1f}" for k in ("ours", "txt", "md")])
    return t


TMP = None


def main():
    global TMP
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", default="/usr/share/doc/python3.11/html/library")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--gen", type=int, default=200, help="gen_pages.py pages (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        TMP = tmp
        corpora = []
        docs = sorted(Path(p) for p in glob.glob(f"{a.docs}/*.html"))[:a.n]
        if docs:
            corpora.append((f"python3.11-doc library/ (first {len(docs)})", docs))
        else:
            console.print(f"[yellow]{a.docs} has no pages: apt-get install python3.11-doc[/yellow]")
        if a.gen:
            out = Path(tmp) / "gen"
            subprocess.run([sys.executable, str(GEN_PAGES), "html", "--n", str(a.gen), "--seed", str(a.seed),
                            "--out", str(out)], check=True)
            corpora.append((f"gen_pages.py html --n {a.gen}", sorted(out.glob("*.html"))))
        for name, paths in corpora:
            m = measure(name, paths, console)
            console.print(table(name, m))
            console.print("rejections by reason (records):", dict(m["reasons"].most_common()))
    console.print(f"load average: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    main()
