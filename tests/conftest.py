"""Shared fixtures: the repository root, a CLI runner, and the small fast configuration."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FIXTURES = REPO / "tests" / "fixtures"
# The toy test fixture (tests/fixtures/tiny_model, a 2.6M-parameter Llama) in place of the real default
# base (SmolLM2-135M-Instruct): plain overrides of the default model config, so they combine with any
# --config-dir. Compose-based tests can also select tests/fixtures/conf/model/tiny.yaml (TINY_CONFIG).
TINY_MODEL = [f"model.name_or_path={FIXTURES / 'tiny_model'}", "model.name=tiny-fixture", "model.method=full",
              "model.train.learning_rate=2e-3"]
TINY_CONFIG = [f"hydra.searchpath=[file://{FIXTURES / 'conf'}]", "model=tiny"]
# A small, fast configuration of the embedded default on the toy model: the same stages, a few training steps.
SMALL = [*TINY_MODEL, "model.train.max_steps=4", "model.train.batch_tokens=1024", "mix.max_seq_len=512",
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
