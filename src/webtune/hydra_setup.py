"""Hydra glue: the config directory (shipped, and the user's ahead of it), our resolvers, composing and
checking a config outside @hydra.main with one-line errors, and loading a run's saved config."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from . import base_model
from .config import register_configs
from .errors import WebtuneError
from .paths import CONF_DIR, locate
from .rundir import new_run_dir, slug


@functools.lru_cache(maxsize=None)
def _unique_run_dir(runs_dir: str, stamp: str, name: str) -> str:
    # Memoised: Hydra resolves hydra.run.dir more than once, and must get one directory.
    import datetime as dt
    return str(new_run_dir(runs_dir, name, dt.datetime.strptime(stamp, "%Y-%m-%d_%H-%M-%S")))


def setup() -> None:
    register_configs()
    if not OmegaConf.has_resolver("webtune_slug"):
        OmegaConf.register_new_resolver("webtune_slug", lambda s: slug(s or "base"))
        OmegaConf.register_new_resolver("webtune_run_dir", _unique_run_dir)
        # ${shipped:templates/chat/gemma3.j2}: a file that ships with webtune, found wherever it is installed
        OmegaConf.register_new_resolver("shipped", lambda path: str(locate(path)))
    if not OmegaConf.has_resolver("webtune_base"):  # ${webtune_base:smollm2-135m-instruct}: the converted base model
        OmegaConf.register_new_resolver("webtune_base", base_model.resolve)


def compose(overrides: list[str], config_dir: Path | None = None):
    """Compose the config as `webtune run` would (for validation, preview and tests)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    setup()
    with initialize_config_dir(config_dir=str(config_dir or CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def use_config_dir(config_dir: Path | None) -> None:
    """Put the user's folder (`--config-dir`, else `./conf` when it exists) ahead of the shipped conf/,
    so its files override shipped ones of the same name and add new ones (hydra_plugins/webtune_searchpath)."""
    from hydra_plugins.webtune_searchpath import ENV
    config_dir = user_config_dir(config_dir)
    if config_dir is None:
        os.environ.pop(ENV, None)
        return
    if not config_dir.is_dir():
        raise WebtuneError(f"--config-dir {config_dir}: no such folder")
    os.environ[ENV] = str(config_dir.resolve())


def user_config_dir(config_dir: Path | None) -> Path | None:
    """`--config-dir DIR`, else `./conf` when it exists, else None."""
    if config_dir is None and Path("conf").is_dir():
        return Path("conf")
    return config_dir


def split_config_dir(args: list[str]) -> tuple[list[str], Path | None]:
    out, config_dir, skip = [], None, False
    for i, a in enumerate(args):
        if skip:
            skip = False
            continue
        if a in ("--config-dir", "-cd"):
            config_dir, skip = Path(args[i + 1]), True
        elif a.startswith("--config-dir="):
            config_dir = Path(a.split("=", 1)[1])
        else:
            out.append(a)
    return out, config_dir


def validate_overrides(args: list[str]):
    """Compose once before Hydra runs, so a config mistake is one line naming file and key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    overrides, config_dir = split_config_dir(args)
    overrides = [a for a in overrides if not a.startswith("-")]
    first = []
    parser = OverridesParser.create()
    try:
        for ov in parser.parse_overrides(overrides):
            if ov.is_hydra_override():
                continue
            if ov.is_sweep_override():
                first.append(f"{ov.get_key_element()}={first_sweep_value(ov)}")
            else:
                first.append(ov.input_line)
        use_config_dir(config_dir)
        return compose(first)
    except WebtuneError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise WebtuneError(config_error_line(exc, config_dir)) from exc


def first_sweep_value(ov):
    """One value of a sweep, to check its key and type: the first choice, or an interval's lower bound
    (Optuna's `interval(1e-4, 1e-2)` cannot be enumerated)."""
    from hydra.core.override_parser.types import IntervalSweep
    sweep = ov.value()
    if isinstance(sweep, IntervalSweep):
        return sweep.start
    return next(iter(ov.sweep_string_iterator()))


def config_error_line(exc: Exception, config_dir: Path | None = None) -> str:
    """Hydra/OmegaConf errors, reduced to one line: where, which key, what is wrong, how to fix."""
    text = str(exc)
    for cause in (exc.__cause__, exc.__context__):
        if cause is not None and str(cause) and str(cause) not in text:
            text += "\n" + str(cause)
    where = re.search(r"(?:In|merging) '([\w/.-]+)'", text)
    key = re.search(r"full_key: ([\w.\[\]]+)", text)
    value = re.search(r"(Value '.*?' (?:of type '\w+' )?could not be converted to \w+)", text)
    first = text.strip().splitlines()[0]
    place = "command line"
    if where and where.group(1) != "config":
        place = _config_file(where.group(1), config_dir) or where.group(1)
    keyname = key.group(1) if key else None
    choice = re.search(r"Invalid value '(.*?)', expected one of \[(.*?)\]", text)
    if choice:
        return (f"config error in {place}: {keyname or first}={choice.group(1)} is not one of "
                f"{choice.group(2)} (pick one of those)")
    if "ConfigKeyError" in text or "not in struct" in text or "not in '" in text:
        what = f"unknown key {keyname or first}"
        fix = keys_near(keyname) if keyname else "see `webtune validate --help`"
    elif value or "ValidationError" in text:
        what = f"wrong type for {keyname or first}" + (f": {value.group(1)}" if value else "")
        fix = "give a value of the key's type"
    elif "Could not find" in text:
        what = first.split(": ", 1)[-1]
        missing = re.search(r"Could not find '([\w-]+)/", text)
        fix = options_of(missing.group(1), config_dir) if missing else "`webtune list` shows what ships"
    else:
        what, fix = first, "see `webtune --help`"
    return f"config error in {place}: {what} ({fix})"


def keys_near(full_key: str) -> str:
    """The keys that do exist where an unknown one was given, the closest first."""
    import dataclasses
    import difflib
    import typing

    from .config import WebtuneConfig
    node, parts = WebtuneConfig, full_key.split(".")
    for part in parts[:-1]:   # down the schema's dataclasses (a group's node is MISSING in the schema itself)
        field_type = typing.get_type_hints(node).get(part) if dataclasses.is_dataclass(node) else None
        field_type = next((a for a in typing.get_args(field_type) if dataclasses.is_dataclass(a)), field_type)
        if not dataclasses.is_dataclass(field_type):
            return "`webtune validate` checks a config; the README lists the keys"
        node = field_type
    keys = [f.name for f in dataclasses.fields(node)]
    close = difflib.get_close_matches(parts[-1], keys, n=1)
    known = f"the keys there: {', '.join(keys[:20])}{' ...' if len(keys) > 20 else ''}"
    return (f"did you mean {'.'.join(parts[:-1] + close)}? " if close else "") + known


def options_of(group: str, config_dir: Path | None) -> str:
    """The options a config group has (shipped and the user's), to pick from."""
    names = sorted({p.stem for root in (user_config_dir(config_dir), CONF_DIR) if root
                    for p in (root / group).glob("*.yaml")})
    listed = {"source": "sources", "template": "templates", "model": "models"}.get(group)
    more = f"; `webtune list {listed}` says what each is" if listed else ""
    return (f"{group} is one of {', '.join(names)}{more}; your own goes in conf/{group}/NAME.yaml" if names
            else f"no {group} options found; your own goes in conf/{group}/NAME.yaml")


def _config_file(name: str, config_dir: Path | None) -> str | None:
    for root in [user_config_dir(config_dir), CONF_DIR]:
        if root and (root / f"{name}.yaml").exists():
            return str(root / f"{name}.yaml")
    return None


def load_run_config(run_dir: Path):
    """RUN/config.yaml verbatim, checked against the schema (never conf/)."""
    from .config import WebtuneConfig
    setup()
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise WebtuneError(f"{path} not found: give a run directory made by `webtune run`")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(WebtuneConfig), OmegaConf.load(path))
    except Exception as exc:  # noqa: BLE001
        raise WebtuneError(f"{path}: {str(exc).splitlines()[0]}") from exc
    return cfg
