"""The Ray side of tests/prepare/test_ray.py, run as a subprocess inside a fresh network namespace.

    python -m tests.prepare.ray_job SPEC.json

SPEC: {"overrides": [...], "root": DIR, "runs": [{"name", "executor", "workers", "shards"}, ...],
"cluster": false}. Each run composes the shipped default with the overrides, runs the prepare stage
on its sources' files into DIR/<name>, folds ledger.jsonl and keeps stats/prepare.json. The Ray runs share
one Ray: a local one started by `ray_data.session` (127.0.0.1, no dashboard, a small object store),
or, with "cluster", a two-node `ray.cluster_utils.Cluster` on 127.0.0.1.
"""
from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

from webtune import ledger, prepare, sources
from webtune.hydra_setup import compose
from webtune.fileio import write_json
from webtune.sources import files
from webtune.stages import source_inputs

RAY = ["prepare.ray.host=127.0.0.1", "prepare.ray.num_cpus=2", "prepare.ray.object_store_mb=128"]


def one_run(root: Path, overrides: list[str], run: dict) -> None:
    cfg = compose([*overrides, f"prepare.executor={run['executor']}", f"prepare.workers={run['workers']}",
                   f"prepare.ray.workers={run['workers']}", f"prepare.ray.shards={run.get('shards', 0)}", *RAY,
                   *([f"prepare.ray.address={run['address']}"] if run.get("address") else [])])
    run_dir = root / run["name"]
    templates = {"domain": cfg.template, "general": cfg.mix.general.template}
    inputs = [prepare.PrepareInput(side, src, templates[side], files.resolve(src.files), sources.iter_records)
              for side, src in source_inputs(cfg)]
    write_json(run_dir / "stats" / "prepare.json", prepare.run(cfg, run_dir, inputs))
    ledger.fold(run_dir, ["prepare"])


def cluster():
    """Two Ray nodes on loopback, one CPU each."""
    from ray.cluster_utils import Cluster
    args = {"num_cpus": 1, "object_store_memory": 100 * 1024 * 1024, "node_ip_address": "127.0.0.1"}
    c = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
    c.add_node(**args)
    c.wait_for_nodes()
    return c


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    root = Path(spec["root"])
    local = [r for r in spec["runs"] if r["executor"] == "local"]
    remote = [r for r in spec["runs"] if r["executor"] == "ray"]
    for run in local:
        one_run(root, spec["overrides"], run)
    c = cluster() if spec.get("cluster") else None
    if c is not None:
        remote = [{**r, "address": c.address} for r in remote]
    from omegaconf import OmegaConf
    from webtune.prepare.executors import ray_data
    rcfg = OmegaConf.create({"address": c.address if c else None, "num_cpus": 2, "object_store_mb": 128,
                             "host": "127.0.0.1"})
    with ray_data.session(rcfg) if remote else nullcontext():  # one Ray for every run
        for run in remote:
            one_run(root, spec["overrides"], run)
    if c is not None:
        c.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
