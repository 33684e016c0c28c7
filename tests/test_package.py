"""A real package: the built wheel, installed into a fresh virtual environment with the pip that
Python's venv ships, runs from an empty folder outside the checkout: `init`, `validate`, `preview`,
`prepare` and `run` (on the test-fixture model), and its HTML path imports what it needs."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import FIXTURES, REPO

# The venv fixture installs torch and the locked dependencies from the registry: ~5 min on a busy 2-core
# machine, counted in the first test's timeout (pytest-timeout includes fixture set-up).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

FAST = [f"model.name_or_path={FIXTURES / 'tiny_model'}", "model.name=tiny-fixture", "model.method=full",
        "model.train.max_steps=2", "model.train.batch_tokens=1024", "mix.max_seq_len=512",
        "eval.generation_examples=2", "eval.samples=2", "eval.max_new_tokens=8", "prepare.workers=1"]
HTML_CHECK = """
from lxml.html.clean import Cleaner   # lxml_html_clean: jusText and trafilatura need it
import justext, trafilatura
page = "<html><body><article><h1>Tea</h1><p>" + "Green tea wants water well below boiling. " * 12 + "</p></article></body></html>"
assert "Green tea" in trafilatura.extract(page)
assert justext.justext(page, justext.get_stoplist("English"))
print("html ok")
"""


def sh(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "WEBTUNE_CONFIG_DIR")}
    r = subprocess.run(cmd, cwd=cwd, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the wheel installed (torch first, then the locked versions)."""
    work = tmp_path_factory.mktemp("wheel")
    # built from a copy of the tracked files, so the checkout gets no build/ folder and nothing untracked ships
    src = work / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work), str(src)],
       cwd=work)
    [wheel] = work.glob("webtune-*.whl")
    sh(["python3", "-m", "venv", str(work / "venv")], cwd=work)     # the stock pip, not upgraded
    # --no-compile: no .pyc written at install (Python compiles what it imports); torch installs in a third of the time
    pip = [str(work / "venv/bin/python"), "-m", "pip", "install", "-q", "--no-compile"]
    sh(pip + ["torch==2.13.0"], cwd=work)
    sh(pip + ["-c", str(REPO / "requirements/cpu.lock"), f"{wheel}[train]"], cwd=work)
    return work / "venv/bin"


def test_stock_pip_installs_a_working_html_path(installed, tmp_path):
    assert "html ok" in sh([str(installed / "python"), "-c", HTML_CHECK], cwd=tmp_path).stdout


def test_the_installed_package_runs_a_domain_of_ones_own(installed, tmp_path):
    webtune = str(installed / "webtune")
    assert not (tmp_path / "conf").exists()
    sh([webtune, "init", "tea"], cwd=tmp_path)
    domain = ["source=tea", "template=tea", *FAST]
    checked = sh([webtune, "validate", *domain], cwd=tmp_path)
    assert "ok: tea_tea" in checked.stdout + checked.stderr
    shown = sh([webtune, "preview", *domain, "n=2"], cwd=tmp_path)     # a seeded sample of the records
    assert len(re.findall(r"tea:records\.jsonl#\d+ · tea_answer", shown.stdout)) == 2
    named = sh([webtune, "preview", *domain, "ids=tea:records.jsonl#1"], cwd=tmp_path)
    assert "tea:records.jsonl#1" in named.stdout and "Steep green tea" in named.stdout

    sh([webtune, "prepare", *domain], cwd=tmp_path)
    [prepared] = (tmp_path / "runs").glob("*_tea_tea")
    assert (prepared / "data/train.jsonl").stat().st_size > 0 and not (prepared / "model").exists()

    ran = sh([webtune, "run", *domain], cwd=tmp_path)
    log = ran.stdout + ran.stderr
    for stage in ("prepare", "mix", "ledger"):
        assert f"{stage}: restored from cache" in log, log[-3000:]
    run = max((tmp_path / "runs").glob("*_tea_tea"))
    assert run != prepared and (run / "report.html").exists()
    ledger = [orjson.loads(line) for line in (run / "ledger.jsonl").read_bytes().splitlines()]
    assert {x["id"] for x in ledger if x["source"] == "tea"} == {f"tea:records.jsonl#{n}" for n in range(1, 33)}
    for name in ("config.yaml", "data/raw/sources.json"):
        assert str(REPO / "src") not in (run / name).read_text(), f"{name}: the package read the checkout's files"
