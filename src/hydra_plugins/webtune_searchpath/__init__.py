"""Puts the user's config folder ahead of webtune's shipped conf/ in Hydra's search path.

`webtune` sets WEBTUNE_CONFIG_DIR to `--config-dir DIR` (or `./conf` when it exists); files there then
override shipped files of the same name and add new ones, and what it lacks comes from the shipped
conf/. Hydra's own `--config-dir` puts the folder *behind* the primary one, so a user could add but
never override.
"""
from __future__ import annotations

import os

from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.plugins.search_path_plugin import SearchPathPlugin

ENV = "WEBTUNE_CONFIG_DIR"


class WebtuneSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        folder = os.environ.get(ENV)
        if folder:
            search_path.prepend(provider="webtune-user", path=f"file://{folder}",
                                anchor=SearchPathQuery(provider="main"))
