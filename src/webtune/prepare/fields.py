"""Which record fields a run reads: its templates (from the parsed Jinja), task `fields` and input
schemas, and the prepare filters, dedupe and cleaning. A source that can ask for fewer fields
(Bright Data's custom_output_fields) asks for these."""
from __future__ import annotations

import json

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.defaults import DEFAULT_NAMESPACE

from .render import resolve, turn_specs

JINJA_SPECIAL = {"loop", "self", "super", "caller", "varargs", "kwargs"} | set(DEFAULT_NAMESPACE)


def fields_read(template, prepare=None) -> set[str] | None:
    """Every record field the run reads, or None when that cannot be known (no template, or one that
    includes another file)."""
    if template is None:
        return None
    read = template_fields(template)
    return None if read is None else read | prepare_fields(prepare)


def template_fields(template) -> set[str] | None:
    """Every record field a template config reads, or None when that cannot be known statically."""
    out: set[str] = set()
    for spec in template.tasks:
        for role, file, text in turn_specs(spec):
            source = resolve(file, f"template task {spec.name!r}: {role} template").read_text() if file else text
            read = jinja_fields(source)
            if read is None:
                return None
            out |= read
        out |= set(spec.get("fields") or [])
        if spec.get("input_schema"):
            schema = json.loads(resolve(spec.input_schema, f"template task {spec.name!r}: input_schema").read_text())
            out |= set(schema.get("required", []))
    return out


def jinja_fields(source: str) -> set[str] | None:
    """The names a Jinja source reads from its context (from the parsed tree: every name loaded,
    minus the ones it assigns itself and Jinja's own); None when it includes, imports or extends
    another template, whose reads cannot be seen from here."""
    ast = jinja2.Environment().parse(source)
    if next(jinja2.meta.find_referenced_templates(ast), False) is not False:
        return None
    names = list(ast.find_all(jinja2.nodes.Name))
    assigned = {n.name for n in names if n.ctx in ("store", "param")}
    return {n.name for n in names if n.ctx == "load"} - assigned - JINJA_SPECIAL


def prepare_fields(prepare) -> set[str]:
    if prepare is None:
        return set()
    filters, dedupe, clean = prepare.filters, prepare.dedupe, prepare.clean
    out = set(filters.required) | set(dedupe.fields) | set(clean.fields)
    if filters.length_field:
        out.add(filters.length_field)
    return out
