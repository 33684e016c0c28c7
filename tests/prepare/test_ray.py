"""prepare.executor=ray gives the bytes prepare.executor=local gives, on the shipped default.

Ray runs in a subprocess (tests/prepare/ray_job.py) inside a fresh network namespace in which only
`lo` exists (`unshare --net`, then `ip link set lo up`), so nothing can leave the machine; Ray binds
127.0.0.1 with num_cpus=2, no dashboard, a small object store and usage stats off. The stats say
which Ray node and worker mapped and wrote each shard, so a silent fallback to local would fail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_MODEL

pytest.importorskip("ray", reason="Ray Data is an optional extra: pip install 'webtune[ray]'")

OUTPUTS = ["data/examples.jsonl", "ledger.jsonl"]


def namespace_problem() -> str | None:
    """Why a fresh network namespace cannot be made here, or None."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2) to isolate Ray in a network namespace"
    probe = subprocess.run(["unshare", "--net", "sh", "-c", "ip link set lo up && ip -o link"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"cannot create a network namespace (needs root or user namespaces): {probe.stderr.strip()[:200]}"
    if [line for line in probe.stdout.splitlines() if ": lo:" not in line]:
        return "the new network namespace has interfaces besides lo"
    return None


def ray_job(tmp_path, runs: list[dict], cluster: bool = False) -> subprocess.CompletedProcess:
    problem = namespace_problem()
    if problem:
        pytest.skip(problem)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"overrides": TINY_MODEL, "root": str(tmp_path), "runs": runs, "cluster": cluster}))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    script = f"ip link set lo up && exec {sys.executable} -m tests.prepare.ray_job {spec}"
    r = subprocess.run(["unshare", "--net", "sh", "-c", script], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


def stats(tmp_path, name: str) -> dict:
    return json.loads((tmp_path / name / "stats/prepare.json").read_text())


def assert_same_bytes(tmp_path, reference: str, others: list[str]) -> None:
    for out in OUTPUTS:
        want = (tmp_path / reference / out).read_bytes()
        assert want, out
        for name in others:
            assert (tmp_path / name / out).read_bytes() == want, f"{name}/{out} differs from {reference}/{out}"


def test_ray_gives_the_local_bytes_for_any_workers_and_shards(tmp_path):
    runs = [{"name": "local1", "executor": "local", "workers": 1},
            {"name": "local2", "executor": "local", "workers": 2},
            {"name": "ray1", "executor": "ray", "workers": 1, "shards": 1},
            {"name": "ray2", "executor": "ray", "workers": 2, "shards": 3},
            {"name": "ray4", "executor": "ray", "workers": 4, "shards": 4}]
    ray_job(tmp_path, runs)
    assert_same_bytes(tmp_path, "local1", ["local2", "ray1", "ray2", "ray4"])
    local = stats(tmp_path, "local1")
    assert local["executor"] == "local" and "ray" not in local
    assert local["duplicates"] > 0  # the default holds duplicates: the groupby had groups to hand back
    for name, workers, shards in [("ray1", 1, 1), ("ray2", 2, 3), ("ray4", 4, 4)]:
        st = stats(tmp_path, name)
        assert (st["executor"], st["workers"], st["shards"]) == ("ray", workers, shards)
        assert st["sources"] == local["sources"] and st["duplicates"] == local["duplicates"]
        ran = st["ray"]
        # every shard was mapped and written by a Ray worker process, none by the driver
        assert sorted(ran["map"]) == sorted(ran["write"]) == [str(s) for s in range(shards)]
        pids = {r["pid"] for step in ("map", "write") for r in ran[step].values()}
        assert os.getpid() not in pids and all(r["worker"] for r in ran["map"].values())
        # the map ran on an actor pool of the configured size
        assert len({r["worker"] for r in ran["map"].values()}) <= workers
        assert ran["colliding_rows"] > local["duplicates"]  # each duplicate and its keeper came back
    assert len({r["worker"] for r in stats(tmp_path, "ray4")["ray"]["map"].values()}) >= 2


def test_two_node_cluster_runs_shards_on_both_nodes(tmp_path):
    runs = [{"name": "local", "executor": "local", "workers": 1},
            {"name": "cluster", "executor": "ray", "workers": 2, "shards": 4}]
    ray_job(tmp_path, runs, cluster=True)
    assert_same_bytes(tmp_path, "local", ["cluster"])
    ran = stats(tmp_path, "cluster")["ray"]
    assert len(ran["nodes"]) == 2
    assert len({r["node"] for r in ran["map"].values()}) == 2, ran["map"]


def test_without_ray_the_executor_says_how_to_install(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"  # as if `ray` were not installed
            "from omegaconf import OmegaConf\n"
            "from webtune.config import PrepareConfig\n"
            "from webtune.prepare import run\n"
            "cfg = OmegaConf.create({'prepare': OmegaConf.structured(PrepareConfig(executor='ray'))})\n"
            f"run(cfg, {str(tmp_path / 'run')!r}, [])\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "WebtuneError" in last and "pip install 'webtune[ray]'" in last, r.stderr[-2000:]
