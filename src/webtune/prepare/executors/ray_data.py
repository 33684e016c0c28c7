"""prepare.executor=ray: the prepare stage's map / reduce / map on Ray Data.

  map     `ray.data.from_items` of shard descriptions -> `map_batches` on an actor pool: each actor
          builds its cleaner, filters, signer and templates once (`mapper.setup`) and runs
          `mapper.map_shard` for every shard it is given; it emits the shard's signatures as rows
          (band: -1 for the exact hash, else the LSH band; h: the hash; shard, row).
  reduce  a Ray Data `groupby` over the hashes (rows bucketed by the hash's top bits, so a group is
          a few hundred rows compared in numpy, not one Python call per hash); each group hands back
          only the rows whose (band, hash) collides, and the driver decides them with the same pure
          `dedupe.keepers` as the local executor, on global input positions (never arrival order).
  write   one Ray task per shard runs `reduce.finish_shard`; the driver assembles the parts.

Shards exchange files under RUN/tmp/prepare, so every node must see the run directory at the same
path (a shared file system) when the cluster has several nodes. The stats record which Ray node,
worker and process mapped and wrote each shard.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson

from ...errors import WebtuneError
from ...textsig.dedupe import grouped
from ..mapper import map_shard, setup
from ..reduce import finish_shard, keeper_ids, reduce_signatures
from ..shardfiles import load_signatures
from . import Outcome

INSTALL = "prepare.executor=ray needs Ray Data: pip install 'webtune[ray]' (or pip install 'ray[data]==2.60.0')"
BUCKET_BITS = 10  # the groupby's groups: 1024 buckets of hashes
WAIT_FOR_ACTORS_S = 300


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise WebtuneError(INSTALL) from None
    return ray


@contextmanager
def session(rcfg):
    """Ray for the run: the cluster at prepare.ray.address, or a local one bound to prepare.ray.host
    (no dashboard, usage stats off), shut down afterwards. An already initialised Ray is reused."""
    ray = import_ray()
    if ray.is_initialized():
        yield 0.0
        return
    t0 = time.perf_counter()
    try:
        if rcfg.address:
            ray.init(address=str(rcfg.address), log_to_driver=False)
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            store = int(rcfg.object_store_mb or 0) * 1024 * 1024
            # address="local": always a new Ray of our own, never one that happens to run on this machine
            ray.init(address="local", num_cpus=int(rcfg.num_cpus or 0) or None, object_store_memory=store or None,
                     include_dashboard=False, _node_ip_address=str(rcfg.host), log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = rcfg.address or f"a local Ray on {rcfg.host}"
        raise WebtuneError(f"prepare.ray: cannot start or reach {where}: {str(e).splitlines()[0]}") from None
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def where_am_i() -> dict:
    import ray
    ctx = ray.get_runtime_context()
    return {"node": ctx.get_node_id(), "worker": ctx.get_worker_id(), "pid": os.getpid()}


class ShardMapper:
    """A Ray Data actor: set up once, then `map_shard` for each shard in the batch."""

    def __init__(self, cfg, run_dir: str, work: str, inputs, n_shards: int):
        self.cfg, self.run_dir, self.work, self.inputs, self.n = cfg, Path(run_dir), Path(work), inputs, n_shards
        self.ready = setup(cfg, inputs)
        d = cfg.prepare.dedupe
        self.exact, self.near = bool(d.exact or d.near), bool(d.near)

    def __call__(self, batch: dict) -> dict:
        rows = []
        for shard in batch["shard"].tolist():
            stats = map_shard(self.cfg, self.run_dir, self.work, self.inputs, shard, self.n, ready=self.ready)
            stats["ran_on"] = where_am_i()
            (self.work / f"mapped-{shard}.json").write_bytes(orjson.dumps(stats))
            rows.append(self.signature_rows(shard))
        return {k: np.concatenate([r[k] for r in rows]) for k in ("bucket", "band", "h", "shard", "row")}

    def signature_rows(self, shard: int) -> dict:
        sig = load_signatures(self.work, shard)
        live = np.flatnonzero(~sig["empty"])
        columns = ([(-1, sig["exact"][live])] if self.exact else []) + \
            ([(b, sig["bands"][live, b]) for b in range(sig["bands"].shape[1])] if self.near else [])
        h = np.concatenate([c for _, c in columns]) if columns else np.zeros(0, dtype=np.uint64)
        band = np.concatenate([np.full(len(live), b, dtype=np.int16) for b, _ in columns]) if columns \
            else np.zeros(0, dtype=np.int16)
        return {"bucket": (h >> np.uint64(64 - BUCKET_BITS)).astype(np.int32), "band": band, "h": h,
                "shard": np.full(len(h), shard, dtype=np.int32), "row": np.tile(live, len(columns)).astype(np.int64)}


def colliding(group: dict) -> dict:
    """One bucket of the groupby: only the rows whose (band, hash) occurs more than once."""
    band, h = group["band"], group["h"]
    order = np.lexsort((h, band))
    band, h = band[order], h[order]
    same = (band[1:] == band[:-1]) & (h[1:] == h[:-1])
    hit = np.zeros(len(h), dtype=bool)
    hit[1:] |= same
    hit[:-1] |= same
    keep = order[hit]
    return {k: np.asarray(v)[keep] for k, v in group.items()}


def write_shard(batch: dict, run_dir: str, work: str, plan, names) -> dict:
    """A Ray task: `finish_shard` for each shard in the batch, with where it ran."""
    shards = batch["shard"].tolist()
    out = [finish_shard(Path(run_dir), Path(work), s, plan, names) | {"ran_on": where_am_i()} for s in shards]
    return {"shard": np.array(shards), "stats": np.array([orjson.dumps(o).decode() for o in out])}


def gather_from(hits: dict):
    """The collisions the groupby handed back, as the keeper function's groups of global positions."""
    def gather(position):
        band, h = hits["band"], hits["h"]
        if not len(h):
            return None, []
        pos = position(hits["shard"].astype(np.int64), hits["row"])
        exact = grouped(h[band == -1], pos[band == -1])
        near = [grouped(h[band == b], pos[band == b]) for b in np.unique(band[band >= 0]).tolist()]
        return exact, [g for g in near if g is not None]
    return gather


def _numpy(ds, columns) -> dict:
    batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
    return {c: np.concatenate([b[c] for b in batches]) if batches else np.zeros(0) for c in columns}


def _shards(ray, n: int):
    return ray.data.from_items([{"shard": s} for s in range(n)], override_num_blocks=n)


def run_ray(cfg, run_dir: Path, work: Path, inputs, console=None) -> Outcome:
    rcfg = cfg.prepare.ray
    ray = import_ray()
    with session(rcfg) as startup:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = console is not None
        # a sort-based shuffle runs as tasks; the hash shuffle starts aggregator actors (seconds each)
        ctx.shuffle_strategy = ray.data.context.ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
        # the map starts once its whole actor pool is up, so every actor gets shards (on a busy
        # machine the first actor up would otherwise take them all); one that cannot be placed
        # fails after WAIT_FOR_ACTORS_S with Ray's "Timed out while starting actors"
        ctx.wait_for_min_actors_s = WAIT_FOR_ACTORS_S
        cpus = float(ray.cluster_resources().get("CPU", 1))
        workers = int(rcfg.workers or 0) or max(1, int(cpus))
        n = int(rcfg.shards or 0) or workers
        each = min(1.0, cpus / workers)  # 4 actors on 2 CPUs still all start
        seconds = {"ray_startup": startup}
        try:
            return _run(ray, cfg, run_dir, work, inputs, n, workers, each, seconds)
        except Exception as e:  # a WebtuneError inside a Ray task comes back wrapped
            raise _user_error(e) from None


def _run(ray, cfg, run_dir, work, inputs, n, workers, each, seconds) -> Outcome:
    from ray.data import ActorPoolStrategy, TaskPoolStrategy
    t0 = time.perf_counter()
    sigs = _shards(ray, n).map_batches(
        ShardMapper, batch_size=1, compute=ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1), num_cpus=each,
        fn_constructor_args=(cfg, str(run_dir), str(work), inputs, n)).materialize()
    seconds["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    hits = _numpy(sigs.groupby("bucket", num_partitions=workers).map_groups(colliding, batch_format="numpy"), ("band", "h", "shard", "row"))
    plan = reduce_signatures(cfg, work, n, gather=gather_from(hits))
    names = keeper_ids(work, plan)
    seconds["reduce"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wrote = _numpy(_shards(ray, n).map_batches(write_shard, batch_size=1, compute=TaskPoolStrategy(size=workers),
                                               num_cpus=each, fn_args=(str(run_dir), str(work), plan, names)),
                   ("shard", "stats"))
    seconds["write"] = time.perf_counter() - t0
    finals = {int(s): orjson.loads(st) for s, st in zip(wrote["shard"], wrote["stats"])}
    mapped = [orjson.loads((work / f"mapped-{s}.json").read_bytes()) for s in range(n)]
    ran = {"map": {s: m.pop("ran_on") for s, m in enumerate(mapped)},
           "write": {s: finals[s].pop("ran_on") for s in range(n)},
           "colliding_rows": int(len(hits["h"]))}
    ran["nodes"] = sorted({r["node"] for step in ("map", "write") for r in ran[step].values()})
    return Outcome(n, workers, mapped, plan, [finals[s] for s in range(n)], seconds, {"ray": ran})


def _user_error(e: BaseException) -> BaseException:
    """The WebtuneError a Ray task raised (one line for the user), else the original error."""
    seen = e
    while seen is not None:
        if isinstance(seen, WebtuneError):
            return seen
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    return e
