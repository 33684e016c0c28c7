"""`accelerate launch -m webtune run ...` with two CPU processes (gloo) on a tiny model: one run
directory written by rank 0, every process training its own shard of the packed rows."""
from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.train.test_families import REPO, save_tiny_model
from tests.conftest import SMALL, only_run_dir
from webtune.paths import SHIPPED


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("acc") / "tiny-llama", "falcon3_7b")  # Llama-shaped


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_run(*overrides: str, processes: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(SHIPPED / "conf/accelerate/cpu.yaml"),
           "--num_processes", str(processes), "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "-m", "webtune", "run", *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}  # loopback only
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_two_cpu_processes_train_their_shards_into_one_run_dir(tiny_dir, runs):
    r = accelerate_run(*SMALL, f"runs_dir={runs}", f"model.name_or_path={tiny_dir}",
                       f"model.chat_template={SHIPPED / 'templates/chat/base.j2'}", "model.method=lora",
                       "model.lora.target_modules=[q_proj,v_proj]")
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run_dir(runs)  # rank 1 made no directory of its own
    assert not [p for p in run.iterdir() if p.name.startswith("-")]
    assert (run / ".hydra").is_dir() and (run / "config.yaml").exists() and (run / "report.html").exists()

    train = json.loads((run / "stats/train.json").read_text())
    assert train["processes"] == 2
    rows = len(np.load(run / "data/packed/train.npz")["bin_offsets"]) - 1
    cfg = OmegaConf.load(run / "config.yaml")
    t = cfg.model.train
    per_device = t.batch_tokens // (2 * t.grad_accum * cfg.mix.max_seq_len)  # exact: the run refuses otherwise
    assert 2 * per_device * t.grad_accum * cfg.mix.max_seq_len == t.batch_tokens
    # each process iterates over half of the rows: sharded once by the Trainer, not twice
    assert train["batches_per_process"] == math.ceil(rows / (per_device * 2))
    assert train["steps"] == 4

    manifest = json.loads((run / "manifest.json").read_text())
    assert {"source", "prepare", "mix", "ledger", "train", "evaluate", "report"} <= set(manifest["stages"])
    assert (run / "model/adapter_config.json").exists()
    # every stage logged once (rank 0), not once per process
    assert r.stderr.count("train: running") == 1 or r.stdout.count("train: running") == 1


def test_three_processes_refuse_tokens_per_step_the_config_does_not_say(runs):
    """1024 tokens per step cannot be 3 processes x whole rows of 512: refuse before any stage runs."""
    r = accelerate_run(*SMALL, f"runs_dir={runs}", "model.train.batch_tokens=1024", processes=3)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if "model.train.batch_tokens=1024 is not 3 process(es)" in line]
    assert errors, r.stderr[-3000:]
    assert "nearest exact settings" in errors[0] and "2 process(es) (1 row(s) per device)" in errors[0]
    assert "model.train.batch_tokens=1536 (1 row(s) per device)" in errors[0]
    assert "rank 0 failed: model.train.batch_tokens=1024" in r.stderr  # the other ranks end with rank 0's line
    assert not list(runs.rglob("examples.jsonl"))  # no data stage ran
