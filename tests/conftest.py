"""Shared fixtures: the repository root, a CLI runner, and the small fast configuration."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One torch/OpenMP thread per process: the suite runs on two workers, and two 2-thread OpenMP teams on
# 2 cores spin against each other (a forward pass several times slower, bench/RESULTS.md, serving).
# The CLI subprocesses inherit it; a test that wants threads of its own sets them.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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


# ------------------------------------------------------------------ running on two workers (pytest-xdist)
# pyproject's addopts run the suite with `-n 2 --dist loadfile --no-loadscope-reorder`, through the
# scheduler below: a file's tests run on one worker, so its module fixture (a whole run, a fresh venv)
# is built once, and the files that share a session fixture building a whole run go with it. The
# longest files go first, so neither worker is left with a long tail. (xdist_group marks cannot do
# this: pytest-xdist 3.8's loadgroup sets Item._nodeid, which pytest 9 no longer reads.)
SAME_WORKER = {"tests/evaluate/test_report_browser.py": "tests/evaluate/test_evaluate_run.py"}   # tiny_run
# by the seconds each file took in a --durations run of the whole suite (a busy machine: for ranking only)
LONGEST_FIRST = ["tests/test_default.py", "tests/test_pipeline.py", "tests/test_package.py", "tests/test_resume.py",
                 "tests/test_cache.py", "tests/deploy/test_export.py", "tests/test_sweep.py", "tests/prepare/test_ray.py",
                 "tests/test_cli.py", "tests/test_preview.py", "tests/test_new_domain.py",
                 "tests/evaluate/test_evaluate_run.py", "tests/test_base_model.py", "tests/sources/test_brightdata_runs.py",
                 "tests/test_config.py", "tests/sources/test_source_cache.py", "tests/deploy/test_chat.py",
                 "tests/train/test_isolation.py", "tests/train/test_accelerate.py", "tests/train/test_ranks.py"]


def worker_unit(nodeid: str) -> str:
    """The file a test runs with, on the same worker."""
    file = nodeid.split("::", 1)[0]
    return SAME_WORKER.get(file, file)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_unit(nodeid)
    return ByFile(config, log)


def pytest_collection_modifyitems(config, items):
    rank = {file: n for n, file in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(worker_unit(item.nodeid), len(rank)))   # stable: the rest keep their order
