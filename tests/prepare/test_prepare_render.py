"""Jinja tasks: sandboxed, StrictUndefined, syntax errors with file and line, template_files."""
import pytest
from omegaconf import OmegaConf

from webtune.config import TaskConfig, TemplateConfig, TurnConfig
from webtune.errors import WebtuneError
from webtune.prepare import template_files
from webtune.prepare.render import load_tasks
from webtune.prepare.validate import Invalid

from .conftest import product_template


def test_renders_system_user_assistant(templates):
    task = load_tasks(product_template(templates))[0]
    fields = {"title": "Desk", "brand": "Oak", "description": "A sturdy desk.", "features": ["wide", "low"]}
    assert task.check(fields) == []
    assert task.render(fields) == [
        {"role": "system", "content": "You write product copy for Oak."},
        {"role": "user", "content": "Write a description.\nTitle: Desk\nBrand: Oak\n- wide\n- low"},
        {"role": "assistant", "content": "A sturdy desk."}]


def test_missing_field_names_template_and_field(templates):
    task = load_tasks(product_template(templates, fields=[]))[0]  # no declared fields: Jinja finds it
    with pytest.raises(Invalid) as e:
        task.render({"title": "Desk", "description": "A sturdy desk."})
    assert e.value.reason == "missing_field"
    assert e.value.detail == "template product_description needs 'brand'"
    declared = load_tasks(product_template(templates))[0]
    with pytest.raises(Invalid, match="template product_description needs 'brand'"):
        declared.check({"title": "Desk", "brand": None, "description": "A sturdy desk."})


def test_syntax_error_names_file_and_line(templates):
    (templates / "user.j2").write_text("Title: {{ title }}\nBrand: {{ brand }\n")
    with pytest.raises(WebtuneError) as e:
        load_tasks(product_template(templates))
    assert str(e.value).startswith(f"{templates / 'user.j2'}:2: template syntax error")


def test_sandbox_blocks_unsafe_access(templates):
    (templates / "user.j2").write_text("{{ title.__class__.__mro__[1].__subclasses__() }}")
    task = load_tasks(product_template(templates))[0]
    with pytest.raises(WebtuneError, match="sandbox"):
        task.render({"title": "x", "brand": "b", "description": "d" * 20})


def test_inline_turns_and_template_files(templates):
    (templates / "footer.j2").write_text("-- {{ brand }}")
    (templates / "assistant.j2").write_text("{{ description }}\n{% include 'footer.j2' %}")
    cfg = OmegaConf.structured(TemplateConfig(name="multi", tasks=[
        TaskConfig(name="describe", user=str(templates / "user.j2"), assistant=str(templates / "assistant.j2"),
                   input_schema=str(templates / "input.schema.json")),
        TaskConfig(name="qa", turns=[TurnConfig(role="user", text="Who makes {{ title }}?"),
                                     TurnConfig(role="assistant", text="{{ brand }}."),
                                     TurnConfig(role="user", text="Thanks")])]))
    files = template_files(cfg)
    assert files == [templates / "user.j2", templates / "assistant.j2", templates / "footer.j2",
                     templates / "input.schema.json"]
    qa = load_tasks(cfg)[1]
    assert [m["content"] for m in qa.render({"title": "Desk", "brand": "Oak"})] == ["Who makes Desk?", "Oak.", "Thanks"]


def test_missing_template_file_is_a_clear_error(templates):
    with pytest.raises(WebtuneError, match="nope.j2.*not found"):
        load_tasks(product_template(templates, user="nope.j2"))


# ---------------------------------------------------------------- the filters every template has
def inline(text: str):
    return load_tasks(OmegaConf.structured(TemplateConfig(name="t", tasks=[TaskConfig(
        name="t", turns=[TurnConfig(role="user", text="q"), TurnConfig(role="assistant", text=text)])])))[0]


LONG = ("The parser reads options, e.g. `-v` and `--count 3.5`, from the command line. It stores each "
        "value on a namespace. Later code reads the namespace instead of the raw arguments.\n\n"
        "```\nparser.add_argument('-v')\n    # indented. Still code.\n```\n\nA last paragraph follows here.")


def test_truncate_sentences_cuts_only_between_sentences_or_blocks():
    task = inline("{{ text | truncate_sentences(n) }}")
    first = LONG.split(" It stores")[0]
    for n in range(len(first) // 2 + 1, len(LONG) + 5):
        got = task.render({"text": LONG, "n": n})[1]["content"]
        assert "…" not in got and LONG.startswith(got), n  # a start of the text itself, never rewritten
        assert got in {LONG.split(" It stores")[0], LONG.split(" Later")[0], LONG.split("\n\n```")[0],
                       LONG.split("\n\nA last")[0], LONG}, (n, got)
        assert len(got) <= n or got == LONG.split(" It stores")[0]  # at least the first sentence
    # "e.g." and "3.5" are not sentence ends, and a code block is one piece: never cut inside
    assert task.render({"text": LONG, "n": 60})[1]["content"].endswith("from the command line.")
    assert task.render({"text": LONG, "n": len(LONG) - 5})[1]["content"].endswith("```")
    # text with no sentence end at all (auto-captions): cut between words, not mid-word
    captions = " ".join(f"word{i}" for i in range(500))
    got = task.render({"text": captions, "n": 100})[1]["content"]
    assert len(got) <= 100 and captions.startswith(got + " ")


def test_first_sentences_and_clean_title():
    task = inline("{{ text | first_sentences(2) }} / {{ title | clean_title }} / {{ title | subject }}")
    got = task.render({"text": LONG, "title": "`argparse` — Parser for options¶ — Python 3.11.4 documentation"})
    assert got[1]["content"] == ("The parser reads options, e.g. `-v` and `--count 3.5`, from the command line. "
                                 "It stores each value on a namespace. / `argparse` — Parser for options / `argparse`")
    assert inline("{{ t | clean_title }}").render({"t": "Getting started | Acme"})[1]["content"] == "Getting started | Acme"


def test_docs_qa_asks_from_the_heading_trail_and_answers_with_the_whole_section():
    from webtune.paths import SHIPPED
    tasks = {t.name: t for t in load_tasks(OmegaConf.load(SHIPPED / "conf/template/docs_qa.yaml"))}
    section = {"title": "argparse — Parser for command-line options", "page_title": "argparse — Parser for command-line options",
               "section_title": "`ArgumentParser.add_argument(name or flags...[, action])`", "level": 3,
               "section_path": ["argparse — Parser for command-line options", "The add_argument() method",
                                "`ArgumentParser.add_argument(name or flags...[, action])`"],
               "text": LONG, "part": 1, "parts": 1}
    tasks["docs_answer"].check(section)
    q, a = (m["content"] for m in tasks["docs_answer"].render(section)[1:])
    assert q == "In `argparse`, under “The add_argument() method”, what does `ArgumentParser.add_argument()` do?"
    assert a == LONG  # the section's own text, whole
    gerund = {**section, "section_title": "Parsing arguments", "section_path": section["section_path"][:1] + ["Parsing arguments"], "level": 2}
    assert tasks["docs_answer"].render(gerund)[1]["content"] == "In `argparse`, how do I go about parsing arguments?"
    with pytest.raises(Invalid, match="needs 'lead'"):  # no real lead paragraph: no summary task
        tasks["docs_summary"].render(section)
    assert tasks["docs_summary"].fields == ["title"]  # the filters read the lead once, in `text`
    lead = {**section, "lead": "The `argparse` module makes it easy to write command-line interfaces.", "outline": ["Example", "Reference"]}
    q, a = (m["content"] for m in tasks["docs_summary"].render(lead)[1:])
    assert a == lead["lead"] and q.endswith("Its sections are: Example; Reference.")
