"""A Hydra callback that writes a sweep's summary table, ranking its runs by a metric."""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback


class SweepSummary(Callback):
    def on_multirun_end(self, config, **kwargs) -> None:
        from .evaluate.report import sweep_summary
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.exists():
            sweep_summary(sweep_dir)
