"""Multi-process training cannot race: two and three CPU processes (gloo on 127.0.0.1), started the
way a cluster launcher starts them (RANK, WORLD_SIZE, MASTER_ADDR per process, no torchrun agent to
clean up after them), running the real Runner and `distributed.execute` (tests/train/rank_job.py)."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO
from webtune.train import distributed
from webtune.errors import WebtuneError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, *args: str) -> list[subprocess.Popen]:
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.train.rank_job", *args], cwd=REPO, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str, float]]:
    """(exit code, stderr, time it ended) per rank."""
    out = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("a rank was still running: the job did not end") from None
        out.append((p.returncode, err, time.time()))
    return out


def checkpoints(run_dir, marker: str) -> None:
    """Two finished checkpoints, the older one with many files (rank 0 takes a while to delete it)."""
    for step in (2, 4):
        (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
        (run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"step": step}))
    for i in range(3000):
        (run_dir / "checkpoints" / "checkpoint-2" / f"shard-{i}.bin").write_bytes(b"w")
    (run_dir / "checkpoints" / ".stage-key").write_text(marker)


def train_key(run_dir) -> str:
    """The key the runner gives rank_job's train stage (its input written as the data stage writes it)."""
    from tests.train.rank_job import ROWS, build
    from webtune.runner import stage_key
    cfg, stages = build(run_dir, "resume")
    (run_dir / "data").mkdir(parents=True)
    (run_dir / "data" / "rows.txt").write_bytes(ROWS)
    return stage_key(stages[1], cfg, run_dir)[0]


@pytest.mark.parametrize("world,valid", [(2, True), (2, False), (3, False)],
                         ids=["2-own-checkpoint", "2-stale-checkpoint", "3-stale-checkpoint"])
def test_every_rank_resumes_from_the_checkpoint_rank0_chose(tmp_path, world, valid):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    checkpoints(run_dir, train_key(run_dir) if valid else "a key from an older config")
    results = finish(launch(world, str(run_dir), "resume"))
    assert all(code == 0 for code, _, _ in results), [err[-2000:] for _, err, _ in results]
    seen = [json.loads((run_dir / f"seen-{rank}.json").read_text()) for rank in range(world)]
    want = str(run_dir / "checkpoints" / "checkpoint-4") if valid else None
    # stale checkpoints were gone before any rank looked; a valid one is every rank's choice
    assert [s["resume"] for s in seen] == [want] * world
    assert [s["found"] for s in seen] == [["checkpoint-2", "checkpoint-4"] if valid else []] * world


@pytest.mark.parametrize("world,failing", [(2, 1), (3, 0)])
def test_a_rank_that_raises_ends_every_rank_with_its_error(tmp_path, world, failing):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    results = finish(launch(world, str(run_dir), "fail", str(failing)), timeout=120)
    message = f"data/packed/train.npz: row 7 is corrupt on rank {failing}; rerun the mix stage"
    failed_at = (run_dir / ".ranks" / f"failed-{failing}.txt").stat().st_mtime
    for rank, (code, err, ended) in enumerate(results):
        assert code != 0, f"rank {rank} exited 0"
        assert ended - failed_at < 15, f"rank {rank} ended {ended - failed_at:.1f}s after rank {failing} failed"
        want = f"webtune: {message}" if rank == failing else f"webtune: rank {failing} failed: {message}"
        assert want in err.splitlines(), err[-2000:]


def test_tokens_per_step_are_exact_or_the_run_refuses():
    assert distributed.rows_per_device(16384, 8, 1, 2048) == 1
    assert distributed.rows_per_device(16384, 1, 4, 2048) == 2
    with pytest.raises(WebtuneError) as e:  # llama31_8b_lora at 4096 tokens on 8 processes
        distributed.rows_per_device(16384, 8, 4, 4096)
    msg = str(e.value)
    assert "\n" not in msg and "0.125" in msg
    assert "model.train.batch_tokens=131072 (1 row(s) per device)" in msg
    with pytest.raises(WebtuneError) as e:
        distributed.rows_per_device(16384, 8, 4, 2048)
    assert "model.train.grad_accum=1 (1 row(s) per device)" in str(e.value)
    with pytest.raises(WebtuneError) as e:
        distributed.rows_per_device(1024, 3, 1, 512)
    assert "2 process(es) (1 row(s) per device)" in str(e.value)
    assert "model.train.batch_tokens=1536 (1 row(s) per device)" in str(e.value)


def test_shipped_model_configs_and_documented_launches_are_exact():
    """Every shipped hf model config at its suggested max_seq_len trains exactly batch_tokens per step,
    alone and (the GPU families) on 8 processes as conf/accelerate/ddp.yaml and fsdp.yaml launch them."""
    from webtune.config import ModelConfig
    from webtune.paths import SHIPPED
    default_seq = OmegaConf.load(SHIPPED / "conf/mix/default.yaml").max_seq_len
    checked = 0
    for path in sorted((SHIPPED / "conf/model").glob("*.yaml")):
        cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(path))
        if str(getattr(cfg.kind, "value", cfg.kind)) != "hf":
            continue
        suggested = re.search(r"Suggested mix\.max_seq_len: (\d+)", path.read_text())
        seq = int(suggested.group(1)) if suggested else default_seq
        distributed.rows_per_device(cfg.train.batch_tokens, 1, cfg.train.grad_accum, seq)
        if suggested:  # a GPU family: conf/accelerate/*.yaml launch it on 8 processes
            distributed.rows_per_device(cfg.train.batch_tokens, 8, 1, seq)
        checked += 1
    assert checked >= 15
    defaults = OmegaConf.to_container(OmegaConf.load(SHIPPED / "conf/config.yaml").defaults)
    default_model = next(d["model"] for d in defaults if isinstance(d, dict) and "model" in d)
    launches = 0
    for path in sorted((SHIPPED / "conf/accelerate").glob("*.yaml")):
        for line in path.read_text().splitlines():
            if "accelerate launch" not in line:
                continue
            world = int(re.search(r"--num_processes (\d+)", line).group(1))
            overrides = dict(arg.split("=", 1) for arg in line.split(" run", 1)[1].split() if "=" in arg)
            model = OmegaConf.merge(OmegaConf.structured(ModelConfig),
                                    OmegaConf.load(SHIPPED / f"conf/model/{overrides.get('model', default_model)}.yaml"))
            distributed.rows_per_device(int(overrides.get("model.train.batch_tokens", model.train.batch_tokens)), world,
                                        int(overrides.get("model.train.grad_accum", model.train.grad_accum)),
                                        int(overrides.get("mix.max_seq_len", default_seq)))
            launches += 1
    assert launches >= 3
