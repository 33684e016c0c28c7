"""Engines for the prepare stage's map / reduce / map (pipeline.py): `local` processes
(`local.run_local`) or Ray Data (`ray_data.run_ray`, `prepare.executor=ray`). Both call the same
per-shard functions (`mapper.map_shard`, `reduce.finish_shard`) and the same keeper decision, so the
output bytes do not depend on the engine. Each hands back an `Outcome`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Outcome:
    """What an executor hands back: the shards' map and write stats, the reduce's plan, timings."""

    shards: int
    workers: int
    mapped: list[dict]
    plan: object             # reduce.Plan
    finals: list[dict]
    seconds: dict[str, float]
    extra: dict
