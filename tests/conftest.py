"""Shared fixtures: the repository root, a CLI runner, and the small fast configuration."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A small, fast configuration of the embedded default: the same stages, a few training steps.
SMALL = ["model.train.max_steps=4", "model.train.batch_tokens=1024", "mix.max_seq_len=512",
         "eval.generation_examples=2", "eval.samples=2", "eval.max_new_tokens=8", "prepare.workers=1"]


def webtune(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "webtune", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def only_run_dir(runs: Path) -> Path:
    dirs = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in ("sweeps", "registry")]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture
def runs(tmp_path) -> Path:
    return tmp_path / "runs"
