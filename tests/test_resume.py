"""`webtune resume RUN_DIR` after SIGKILL (issue 11): finished stages are skipped by their hashes, a
half-written output is never taken for a finished one, training goes on from its last checkpoint, and
the data comes out byte-identical to an uninterrupted run's.

The real CLI is started with Popen and killed with SIGKILL at moments picked by watching the run
directory (the files a stage writes, manifest.json, the trainer's checkpoints).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, SMALL, only_run_dir, webtune
from webtune.fileio import hash_path, read_json

# The module fixture is a run killed three times and resumed, beside a reference run: minutes on a busy
# 2-core machine, counted in the first test's timeout (pytest-timeout includes fixture set-up).
pytestmark = pytest.mark.timeout(900)

MAX_STEPS = 6
# SMALL, with enough training steps (a checkpoint after each) to be killed in the middle of training.
RESUME = [o for o in SMALL if not o.startswith("model.train.max_steps=")] + [
    f"model.train.max_steps={MAX_STEPS}", "model.train.save_steps=1", "model.train.logging_steps=1"]
DATA = ["data/examples.jsonl", "data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "data/general_test.jsonl",
        "data/packed", "ledger.jsonl"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def start(args: list[str], log: Path) -> subprocess.Popen:
    """The real CLI in the background; its output goes to a file (a full pipe would stall it)."""
    fh = open(log, "w")
    return subprocess.Popen([sys.executable, "-m", "webtune", *args], cwd=REPO, env=ENV, stdout=fh, stderr=fh)


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """Poll until ready() and SIGKILL the process at once; fail if it ended or never got there."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def stop_when(proc: subprocess.Popen, ready, what: str, timeout: float = 240) -> None:
    """Like kill_when, for a run that may also have finished on its own by then."""
    if proc.poll() is None:
        kill_when(proc, ready, what, timeout)
    assert ready(), f"{what} never happened (rc {proc.returncode})"


def stages_done(run_dir: Path) -> set[str]:
    try:
        return set((read_json(run_dir / "manifest.json") or {}).get("stages", {}))
    except ValueError:  # never half a manifest: it is written to a temporary name and renamed
        pytest.fail(f"{run_dir}/manifest.json is half-written")


def complete_checkpoints(run_dir: Path) -> list[int]:
    """Steps whose checkpoint the trainer finished (trainer_state.json is the last file it writes)."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").exists())


@pytest.fixture(scope="module")
def killed(tmp_path_factory) -> dict:
    """One run killed three times: during prepare, between stages (mix recorded), during training.

    Its own runs_dir, so no stage can come from another run's cache: what is reused is what this run
    finished. Before the last resume a copy of the run is given a half-saved checkpoint (see below).
    """
    root = tmp_path_factory.mktemp("killed")
    runs = root / "runs"
    out: dict = {"logs": {}}
    # The uninterrupted run, alongside, in its own runs_dir. Its data (examples, splits, packed rows,
    # ledger) is final once its ledger stage is recorded: a watcher stops it there, so the suite does
    # not spend its time on the reference's training and evaluation.
    reference_runs = root / "reference"
    reference = start(["run", f"runs_dir={reference_runs}", *RESUME], root / "reference.out")

    def reference_data_done():
        dirs = [p for p in reference_runs.glob("*_*") if p.is_dir()] if reference_runs.is_dir() else []
        return bool(dirs) and "ledger" in stages_done(dirs[0])
    watcher = threading.Thread(target=stop_when, args=(reference, reference_data_done, "the reference's ledger"),
                               daemon=True)
    watcher.start()

    # 1. during prepare: its shard files exist, its outputs are half there, the manifest lacks it
    proc = start(["run", f"runs_dir={runs}", *RESUME], root / "run.out")

    def in_prepare():
        dirs = [p for p in runs.glob("*_*") if p.is_dir()] if runs.is_dir() else []
        return bool(dirs) and (dirs[0] / "tmp/prepare/cand-0.jsonl").exists()
    kill_when(proc, in_prepare, "prepare to start")
    run_dir = only_run_dir(runs)
    out["run_dir"] = run_dir
    out["done_at_kill"] = [stages_done(run_dir)]

    # 2. between stages: mix is recorded in the manifest, train is not
    proc = start(["resume", str(run_dir)], root / "resume1.out")
    kill_when(proc, lambda: "mix" in stages_done(run_dir), "mix to finish")
    out["done_at_kill"].append(stages_done(run_dir))
    out["logs"]["resume1"] = (root / "resume1.out").read_text()

    # 3. during training: a few checkpoints finished, training not
    proc = start(["resume", str(run_dir)], root / "resume2.out")
    kill_when(proc, lambda: any(s >= 2 for s in complete_checkpoints(run_dir)), "checkpoint-2")
    out["done_at_kill"].append(stages_done(run_dir))
    out["checkpoint_at_kill"] = max(complete_checkpoints(run_dir))
    out["logs"]["resume2"] = (root / "resume2.out").read_text()

    # A kill while the trainer saves leaves checkpoint-<n+1>/ with weights but no trainer_state.json
    # (the trainer writes in place, that file last). Make that state in a copy, resumed by its own test.
    copy = root / "copy" / run_dir.name
    shutil.copytree(run_dir, copy)
    n = out["checkpoint_at_kill"]
    half = copy / f"checkpoints/checkpoint-{n + 1}"
    half.mkdir(exist_ok=True)   # it exists already when the kill itself landed during that save
    for f in (copy / f"checkpoints/checkpoint-{n}").iterdir():
        if f.suffix in (".safetensors", ".json") and f.name != "trainer_state.json" and not (half / f.name).exists():
            shutil.copy2(f, half / f.name)
    assert not (half / "trainer_state.json").exists()
    out["half_saved_copy"] = copy

    r = webtune("resume", str(run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    out["logs"]["resume3"] = r.stderr

    watcher.join(timeout=240)
    assert reference_data_done(), (root / "reference.out").read_text()[-3000:]
    out["reference"] = only_run_dir(reference_runs)
    return out


def test_each_kill_landed_where_intended(killed):
    during_prepare, between, during_training = killed["done_at_kill"]
    assert during_prepare == {"source"}
    assert {"source", "prepare", "mix"} <= between and "train" not in between
    assert "mix" in during_training and "train" not in during_training
    assert 2 <= killed["checkpoint_at_kill"] < MAX_STEPS


def test_a_half_written_stage_is_run_again_not_skipped(killed):
    log = killed["logs"]["resume1"]
    assert "source: unchanged, skipped" in log
    assert "prepare: unchanged, skipped" not in log and "prepare: running" in log


def test_finished_stages_are_skipped_by_their_hashes(killed):
    for name, stages in (("resume2", ("source", "prepare", "mix")),
                         ("resume3", ("source", "prepare", "mix", "ledger"))):
        log = killed["logs"][name]
        for stage in stages:
            assert f"{stage}: unchanged, skipped" in log, (name, stage)
            assert f"{stage}: running" not in log and f"{stage}: restored from cache" not in log, (name, stage)


def test_training_continues_from_its_last_checkpoint(killed):
    n = killed["checkpoint_at_kill"]
    assert f"resuming training from {killed['run_dir'] / 'checkpoints'}/checkpoint-{n}" in killed["logs"]["resume3"]
    stats = read_json(killed["run_dir"] / "stats/train.json")
    assert stats["steps"] == MAX_STEPS
    assert stats["resumed_from"].endswith(f"checkpoint-{n}")
    steps_logged = [h["step"] for h in stats["loss_curve"] if "loss" in h]
    assert steps_logged[-1] == MAX_STEPS and n + 1 in steps_logged    # the steps after the checkpoint ran


def test_data_is_identical_to_an_uninterrupted_run(killed):
    run_dir, reference = killed["run_dir"], killed["reference"]
    for rel in DATA:
        assert hash_path(run_dir / rel) == hash_path(reference / rel), rel
    got, want = read_json(run_dir / "manifest.json")["stages"], read_json(reference / "manifest.json")["stages"]
    for stage in ("prepare", "mix", "ledger"):
        assert got[stage]["key"] == want[stage]["key"], stage
    for rel in ("model/config.json", "metrics.json", "report.html"):
        assert (run_dir / rel).exists(), rel


def test_a_half_saved_checkpoint_is_not_resumed(killed, tmp_path):
    """checkpoint-<n+1>/ without trainer_state.json is what SIGKILL during a save leaves behind."""
    copy, n = killed["half_saved_copy"], killed["checkpoint_at_kill"]
    # Its own runs_dir: the original has finished by now, and its train stage is in the shared cache.
    config = copy / "config.yaml"
    config.write_text(re.sub(r"(?m)^runs_dir: .*$", f"runs_dir: {tmp_path / 'runs'}", config.read_text()))
    proc = start(["resume", str(copy)], tmp_path / "resume.out")
    stop_when(proc, lambda: "train" in stages_done(copy), "training to finish")   # evaluate is not the point
    log = (tmp_path / "resume.out").read_text()
    assert "Traceback" not in log and "error:" not in log, log[-3000:]
    assert f"resuming training from {copy / 'checkpoints'}/checkpoint-{n}" in log
    assert read_json(copy / "stats/train.json")["steps"] == MAX_STEPS


# ------------------------------------------------------------------ the runner alone, deterministic
STAGE_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from omegaconf import OmegaConf
    from webtune.console import log
    from webtune.runner import Runner, Stage

    run_dir, moment = Path(sys.argv[1]), sys.argv[2]

    def write(ctx):
        out = ctx.run_dir / "data/examples.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as fh:
            for i in range(100):
                fh.write('{"id": %d}\\n' % i)
                if moment == "mid-write" and i == 49:
                    fh.flush()
                    (ctx.run_dir / "ready").touch()
                    time.sleep(60)
        if moment == "written, not recorded":
            (ctx.run_dir / "ready").touch()
            time.sleep(60)

    cfg = OmegaConf.create({"runs_dir": str(run_dir.parent), "x": 1})
    stages = [Stage("write", write, config=["x"], outputs=["data/examples.jsonl"])]
    Runner(cfg, run_dir, stages, console=None, log=log).run()
""")


@pytest.mark.parametrize("moment", ["mid-write", "written, not recorded"])
def test_runner_never_takes_an_unrecorded_output_for_a_finished_one(tmp_path, moment):
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT)
    run_dir = tmp_path / "runs/r"
    run_dir.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), moment], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: (run_dir / "ready").exists(), moment, timeout=60)
    assert "write" not in stages_done(run_dir)
    lines_at_kill = (run_dir / "data/examples.jsonl").read_text().count("\n")
    assert lines_at_kill == (50 if moment == "mid-write" else 100)
    (run_dir / "ready").unlink()
    r = subprocess.run([sys.executable, str(script), str(run_dir), "resume"], env=ENV, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "write: running" in r.stderr and "unchanged, skipped" not in r.stderr
    assert (run_dir / "data/examples.jsonl").read_text().count("\n") == 100
    assert read_json(run_dir / "manifest.json")["stages"]["write"]["outputs"]["data/examples.jsonl"] == \
        hash_path(run_dir / "data/examples.jsonl")
