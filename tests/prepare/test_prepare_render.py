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
