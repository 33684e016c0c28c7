"""Hydra glue: the config directory, our resolvers, and composing a config outside @hydra.main."""
from __future__ import annotations

import functools
from pathlib import Path

from omegaconf import OmegaConf

from . import base_model
from .config import register_configs
from .rundir import new_run_dir, slug

from .paths import CONF_DIR, locate


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
