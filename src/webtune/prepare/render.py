"""Rendering: a record's fields -> chat messages, through the task's Jinja templates.

Jinja runs in a SandboxedEnvironment with StrictUndefined. A record without a field the template
needs is a `missing_field` rejection naming the template, the record and the field; a template
with a syntax error is one WebtuneError naming the file and line, raised when the task loads
(before any record is read). Template and schema paths are relative to the working directory,
else to the webtune checkout (so the shipped `templates/` work from anywhere).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import jinja2.meta
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from ..config import TeacherTurn, teacher_turn
from ..errors import WebtuneError
from .validate import InputSchema, Invalid
from .template_filters import FILTERS, TESTS

from ..paths import SHIPPED, confined, locate, search_dirs
_UNDEFINED = [re.compile(r"^'([^']+)' is undefined"), re.compile(r"has no attribute '([^']+)'"),
              re.compile(r"has no element (\S+)")]


class NullValue(Exception):
    pass


def _finalize(value):
    # A null printed as "None" would silently teach the model the word None.
    if value is None:
        raise NullValue()
    return value


def resolve(path: str, what: str) -> Path:
    """A template or schema file: from the working directory, else the shipped copy."""
    found = locate(path)
    if found.is_file():
        return found
    raise WebtuneError(f"{what} {path!r} not found (looked in {Path.cwd()} and {SHIPPED}); "
                       f"fix the path in the template config")


class _Loader(jinja2.FileSystemLoader):
    """Jinja's own rule for includes (a name under one of the search folders, no `..`), kept for
    links too: a name whose file, links resolved, lies outside every search folder is not found."""

    def get_source(self, environment, template):
        source, filename, uptodate = super().get_source(environment, template)
        if not confined(filename, [Path(d) for d in self.searchpath]):
            raise jinja2.TemplateNotFound(f"{template} (a link leading out of {', '.join(self.searchpath)})")
        return source, filename, uptodate


def _environment(folder: Path) -> SandboxedEnvironment:
    loader = _Loader([str(d) for d in search_dirs(folder)])
    env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, loader=loader, autoescape=False,
                               finalize=_finalize, keep_trailing_newline=False)
    env.filters.update(FILTERS)
    env.tests.update(TESTS)
    return env


def _compile(env: SandboxedEnvironment, source: str, where: str) -> jinja2.Template:
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise WebtuneError(f"{e.filename or where}:{e.lineno}: template syntax error: {e.message}") from None


@dataclass
class Turn:
    role: str
    template: jinja2.Template
    where: str
    static: str | None = None   # the text itself when the template has no Jinja in it (a fixed system prompt)


@dataclass
class Task:
    """One task of a template config: how a record becomes one chat example."""

    name: str
    turns: list[Turn]
    fields: list[str] = field(default_factory=list)
    schema: InputSchema | None = None
    variables: set[str] | None = None   # record fields the templates read (None: unknown, e.g. includes)
    teacher: TeacherTurn | None = None  # the user turn is the teacher's prompt; the teacher step writes the requests
    grounding_fields: list[str] = field(default_factory=list)  # what an answer should realise (eval's coverage)

    def grounding_values(self, fields: dict) -> dict | None:
        """The declared grounding fields' values, carried with each example so that evaluate can say
        which share of them an answer realises (None: the task declares none)."""
        return {name: fields.get(name) for name in self.grounding_fields} or None

    def check(self, fields: dict) -> list[str]:
        """Fields the task needs, then its input schema (coercing in place); returns the repairs."""
        for name in self.fields:
            value = fields.get(name)
            if value is None or value == "":
                raise Invalid("missing_field", f"template {self.name} needs {name!r}")
        return self.schema.validate(fields) if self.schema is not None else []

    def render(self, fields: dict) -> list[dict]:
        """The example's messages; raises Invalid for a record the templates cannot render."""
        messages = []
        for turn in self.turns:
            if turn.static is not None:
                messages.append({"role": turn.role, "content": turn.static})
                continue
            try:
                text = _render(turn.template, fields)
            except jinja2.UndefinedError as e:
                raise Invalid("missing_field", f"template {self.name} needs {_undefined_name(str(e))!r}") from None
            except NullValue:
                raise Invalid("missing_field", f"template {self.name} ({turn.where}) prints a null value") from None
            except jinja2.TemplateSyntaxError as e:
                raise WebtuneError(f"{e.filename or turn.where}:{e.lineno}: template syntax error: {e.message}") from None
            except SecurityError as e:
                raise WebtuneError(f"{turn.where}: the template does something the sandbox forbids: {e}") from None
            except RecursionError:
                raise WebtuneError(f"{turn.where}: the template includes itself (through a name computed while "
                                   f"rendering); remove the include") from None
            except (TypeError, ValueError, KeyError, IndexError, AttributeError) as e:
                raise Invalid("render_error", f"template {self.name} ({turn.where}): {type(e).__name__}: {e}") from None
            messages.append({"role": turn.role, "content": text.strip()})
        return messages


def _render(template: jinja2.Template, fields: dict) -> str:
    """Template.render without its per-call copy of the globals ChainMap (half its cost here):
    the globals are copied once per template, the record's fields laid over them."""
    base = template.__dict__.get("_webtune_globals")
    if base is None:
        base = template._webtune_globals = dict(template.globals)
    context = template.new_context({**base, **fields}, shared=True)
    try:
        return template.environment.concat(template.root_render_func(context))
    except Exception:
        return template.environment.handle_exception()  # re-raises, with the template's line in the traceback


def _undefined_name(message: str) -> str:
    for pattern in _UNDEFINED:
        m = pattern.search(message)
        if m:
            return m.group(1)
    return message


def turn_specs(task) -> list[tuple[str, str | None, str | None]]:
    """(role, file, inline text) for every turn of a task config, system first."""
    specs = []
    if task.get("system"):
        specs.append(("system", None, task.system))
    if task.get("turns"):
        if task.get("user") or task.get("assistant"):
            raise WebtuneError(f"template task {task.name!r}: give either user/assistant files or turns, not both")
        for i, turn in enumerate(task.turns):
            if bool(turn.get("template")) == bool(turn.get("text")):
                raise WebtuneError(f"template task {task.name!r}, turn {i + 1}: give exactly one of template (a file) "
                                   f"or text (inline Jinja)")
            specs.append((turn.role, turn.get("template"), turn.get("text")))
    else:
        if not task.get("user") or not task.get("assistant"):
            raise WebtuneError(f"template task {task.name!r}: needs user and assistant template files, or a turns list")
        specs += [("user", user_template(task), None), ("assistant", task.assistant, None)]
    return specs


def user_template(task) -> str:
    """The user turn's Jinja file: the template, or the teacher's prompt (rendered here, sent to the
    teacher by the teacher step, which puts the requests it writes in its place)."""
    turn = teacher_turn(task)
    return turn.prompt if turn else task.user


def _variables(env: SandboxedEnvironment, source: str) -> set[str] | None:
    ast = env.parse(source)
    if next(jinja2.meta.find_referenced_templates(ast), False) is not False:
        return None  # an include or import reads variables we cannot see from here
    return set(jinja2.meta.find_undeclared_variables(ast))


def load_task(task) -> Task:
    turns = []
    variables: set[str] | None = set()
    for role, file, text in turn_specs(task):
        if file:
            path = resolve(file, f"template task {task.name!r}: {role} template")
            where, env, source = str(path), _environment(path.parent), path.read_text()
            static = None
            _included(source, path.parent, (where,))   # an include cycle fails here, in one line
        else:
            where, env, source = f"{task.name}.{role} (inline)", _environment(Path.cwd()), text
            static = text.strip() if not any(tag in text for tag in ("{{", "{%", "{#")) else None
        turns.append(Turn(role, _compile(env, source, where), where, static))
        if role == "user" and teacher_turn(task):   # the prompt asks for this many, with answers or not
            turns[-1].template.globals.update(n=teacher_turn(task).n, answers=teacher_turn(task).answers)
        found = _variables(env, source)
        variables = None if found is None or variables is None else variables | found
    schema = None
    if task.get("input_schema"):
        schema = InputSchema(resolve(task.input_schema, f"template task {task.name!r}: input_schema"))
    return Task(task.name, turns, list(task.get("fields") or []), schema, variables, teacher_turn(task),
                list(task.get("grounding_fields") or []))


def load_tasks(cfg_template) -> list[Task]:
    tasks = [load_task(t) for t in cfg_template.tasks]
    if not tasks:
        raise WebtuneError(f"template {cfg_template.name!r} has no tasks; add at least one under tasks:")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise WebtuneError(f"template {cfg_template.name!r}: task names must be unique, got {names}")
    return tasks


def template_files(cfg_template) -> list[Path]:
    """Every Jinja and schema file the template reads (its own files and what they include)."""
    out: list[Path] = []
    for task in cfg_template.tasks:
        for role, file, text in turn_specs(task):
            if file:
                path = resolve(file, f"template task {task.name!r}: {role} template")
                out.append(path)
                out += _included(path.read_text(), path.parent, (str(path),))
            elif text:
                out += _included(text, Path.cwd())
        if task.get("input_schema"):
            out.append(resolve(task.input_schema, f"template task {task.name!r}: input_schema"))
    return list(dict.fromkeys(out))


def _included(source: str, folder: Path, chain: tuple[str, ...] = ()) -> list[Path]:
    """The files `source` includes (imports, extends), and theirs, found by the loader Jinja renders
    with. `chain`: the files on the way here, so a template that includes itself is one error."""
    env = _environment(folder)
    try:
        names = jinja2.meta.find_referenced_templates(env.parse(source))
    except jinja2.TemplateSyntaxError:
        return []  # reported with file and line when the task loads
    found = []
    for name in names:
        if name is None:
            continue
        try:
            text, filename, _ = env.loader.get_source(env, name)
        except jinja2.TemplateNotFound as e:
            raise WebtuneError(f"{chain[0] if chain else folder}: includes {name!r}, which is not a file in "
                               f"{', '.join(map(str, search_dirs(folder)))} ({e.message})") from None
        path = Path(filename)
        if any(os.path.samefile(path, c) for c in chain if os.path.exists(c)):
            names_ = " -> ".join(Path(c).name for c in chain) + f" -> {path.name}"
            raise WebtuneError(f"{chain[0]}: the template includes itself ({names_}); remove the include")
        found.append(path)
        found += _included(text, path.parent, chain + (str(path),))
    return found
