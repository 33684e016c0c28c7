"""`webtune validate`: everything about a composed config that can be checked without running it.

Keys, types and enum-like values are checked by the structured configs while Hydra composes
(`config.py`); this module checks what the schema cannot: template and schema files exist and
compile, source files exist, the env vars the chosen source and model will use are set, the model
path or hub id is well formed. `webtune run` runs the same checks before its first stage.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterator

from .errors import WebtuneError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def problems(cfg) -> list[str]:
    """One line per problem; empty when the config is ready to run."""
    found = []
    for check in CHECKS:
        try:
            found += list(check(cfg))
        except WebtuneError as exc:   # a check that cannot go on reports why, as one problem
            found.append(str(exc))
    return found


def config_files(cfg) -> Iterator[str]:
    """Every template, schema and teacher prompt file a config names lies in the domain's folder or
    the shipped files (paths.domain_folders): `user: ../../../../etc/passwd` would otherwise render
    that file into every example (docs/hostile-input.md). Includes keep to the same folders (render._Loader)."""
    from .paths import confined, domain_folders, locate
    folders = ", ".join(str(f) for f in domain_folders())
    for key, value in _named_files(cfg):
        if not confined(locate(value)):
            yield (f"{key}: {value!r} lies outside the domain's folder and webtune's shipped templates "
                   f"({folders}); move the file into the domain's folder")


def _named_files(cfg) -> Iterator[tuple[str, str]]:
    """(config key, path) of each file a template config names (domain and general templates)."""
    for side, tpl in zip(("template", "mix.general.template"), _templates(cfg)):
        for i, task in enumerate(tpl.tasks):
            at = f"{side}.tasks[{i}]"
            user = task.get("user")
            if user is not None and not isinstance(user, str):   # {teacher: prompt.j2, n: 3}
                user = user.get("teacher")
                at_user = f"{at}.user.teacher"
            else:
                at_user = f"{at}.user"
            named = [(at_user, user)] + [(f"{at}.{k}", task.get(k)) for k in ("assistant", "input_schema")]
            named += [(f"{at}.turns[{j}].template", turn.get("template")) for j, turn in enumerate(task.get("turns") or [])]
            yield from ((key, str(value)) for key, value in named if value)


def runs_dir(cfg) -> Iterator[str]:
    """runs_dir is a folder of its own: not `/`, a system or home folder, or a file."""
    from .paths import runs_dir_problem
    problem = runs_dir_problem(cfg.runs_dir)
    if problem:
        yield problem


def templates(cfg) -> Iterator[str]:
    """Every Jinja and schema file exists and compiles (domain and general templates)."""
    from .prepare.render import load_tasks, template_files
    for tpl in _templates(cfg):
        load_tasks(tpl)                       # compiles each turn: syntax errors name file and line
        for path in template_files(tpl):
            if path.suffix == ".json":
                yield from _schema(path)


def _templates(cfg) -> list:
    return [cfg.template] + ([cfg.mix.general.template] if cfg.mix.general.enabled else [])


def _schema(path: Path) -> Iterator[str]:
    import jsonschema
    try:
        jsonschema.validators.validator_for(schema := json.loads(path.read_text())).check_schema(schema)
    except json.JSONDecodeError as exc:
        yield f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})"
    except jsonschema.SchemaError as exc:
        yield f"{path}: not a valid JSON Schema ({exc.message})"


def source_files(cfg) -> Iterator[str]:
    """A files source names files that exist (the general set too)."""
    from .sources import files
    sources = [cfg.source] + ([cfg.mix.general.source] if cfg.mix.general.enabled else [])
    for src in sources:
        if src.kind == "files":
            try:
                files.resolve(src.files)
            except WebtuneError as exc:
                yield f"source {src.name!r}: {exc}"


def env_vars(cfg) -> Iterator[str]:
    """The secrets the run will send are in the environment (names only; values are never read out)."""
    for what, name in _secrets(cfg):
        if not os.environ.get(name):
            yield f"{what} needs the env var {name}: export {name}=... (it is read from the environment only)"


def _secrets(cfg) -> Iterator[tuple[str, str]]:
    src = cfg.source
    bright = src.kind in ("brightdata", "brightdata_dataset") or (src.kind == "urls"
                                                                   and src.urls.fetch == "brightdata_crawl")
    if bright and not _cached(cfg):   # a known snapshot id still needs the token to download it
        yield f"source {src.name!r} ({src.kind})", src.brightdata.api_key_env
    if cfg.model.kind == "openai":
        yield f"model {cfg.model.name!r} (openai)", cfg.model.api_key_env
    if cfg.eval.judge.enabled:
        yield "eval.judge", cfg.eval.judge.api_key_env


def _cached(cfg) -> bool:
    """The source's snapshot is in runs/.cache/source: the run sends Bright Data no request."""
    from . import sources
    from .prepare.fields import fields_read
    from .sources import cache
    try:
        src = sources.as_requested(cfg.source, fields_read(cfg.template, cfg.prepare))
    except Exception:  # noqa: BLE001 - a broken template is reported by the templates check
        return False
    return cache.is_cached(src, cfg.runs_dir)


def model_path(cfg) -> Iterator[str]:
    """A local model folder exists; anything else looks like a hub id; a chat template file exists."""
    m = cfg.model
    if m.kind != "hf":
        return
    for what, value in (("model.name_or_path", m.name_or_path), ("model.tokenizer", m.tokenizer)):
        if value:
            yield from _model_ref(what, str(value))
    if m.chat_template and not Path(m.chat_template).is_file():
        yield f"model.chat_template {m.chat_template!r} does not exist"


def _model_ref(what: str, value: str) -> Iterator[str]:
    from .models import looks_local
    path = Path(value).expanduser()
    if looks_local(value):
        if not path.is_dir():
            yield f"{what} {value!r} is not a folder (relative paths start at {Path.cwd()})"
        elif not (path / "config.json").exists() and not any(path.glob("*.gguf")):
            yield f"{what} {value!r} holds no config.json or .gguf file: not a model folder"
    elif not HUB_ID.match(value):
        yield f"{what} {value!r} is neither a folder nor a hub id (org/name)"


def tokens_per_step(cfg) -> Iterator[str]:
    """Processes x rows x accumulation x max_seq_len is exactly model.train.batch_tokens (else the
    nearest exact settings are named), so no launch silently trains more tokens per step than configured."""
    from .train.distributed import check_tokens_per_step, is_distributed
    if not is_distributed():   # under accelerate, rank 0 checks and every rank ends with its one line
        check_tokens_per_step(cfg)
    return iter(())


CHECKS: list[Callable] = [runs_dir, config_files, templates, source_files, env_vars, model_path, tokens_per_step]
