"""The model registry: versions, the eval gate, promote/rollback history, crash and concurrency safety."""
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from webtune.deploy import registry as reg
from webtune.deploy.generate import make_tiny_chat_model
from webtune.errors import WebtuneError


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


def make_run(root: Path, model_dir: Path, passed=True, flags=(), tag="a") -> Path:
    run = root / f"run_{tag}"
    shutil.copytree(model_dir, run / "model")
    (run / "metrics.json").write_text(json.dumps({"eval": {"passed": passed, "flags": list(flags)},
                                                  "domain_loss": 1.5}))
    (run / "config.yaml").write_text(f"name: shop\nrun: {tag}\n")
    return run


@pytest.fixture
def registry3(tmp_path, tiny_model):
    """A registry with model `shop` at v1..v3, nothing promoted."""
    root = tmp_path / "registry"
    for tag in "abc":
        reg.register(root, "shop", make_run(tmp_path, tiny_model, tag=tag))
    return root


def check_consistent(root: Path, name: str) -> dict:
    """The pointer is whole, the history has consecutive seqs, and replaying it gives the pointer."""
    info = reg.show(root, name)  # takes the lock, so it also recovers after a crash
    cur, history = info["current"], info["history"]
    assert [h["seq"] for h in history] == list(range(1, len(history) + 1))
    stack = []
    for h in history:
        if h["action"] == "promote":
            stack.append(h["version"])
        else:
            stack.pop()
            assert stack[-1] == h["version"]
    if cur is None:
        assert history == []
    else:
        assert cur["seq"] == len(history) and cur["stack"] == stack and cur["version"] == stack[-1]
        assert (root / name / f"v{cur['version']}").is_dir()
    return info


def test_register_copies_model_metrics_and_provenance(tmp_path, tiny_model):
    root = tmp_path / "registry"
    run = make_run(tmp_path, tiny_model)
    assert reg.register(root, "shop", run) == 1
    assert reg.register(root, "shop", run) == 2
    v1 = root / "shop" / "v1"
    weights = v1 / "model" / "model.safetensors"
    assert weights.read_bytes() == (run / "model" / "model.safetensors").read_bytes()
    assert weights.stat().st_ino == (run / "model" / "model.safetensors").stat().st_ino  # hard link
    assert json.loads((v1 / "metrics.json").read_text())["domain_loss"] == 1.5
    source = json.loads((v1 / "source.json").read_text())
    assert source["run_dir"] == str(run.resolve())
    assert source["config_hash"] == hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()
    assert reg.list_models(root) == [{"name": "shop", "versions": [1, 2], "current": None}]
    assert reg.resolve(root, "shop@v1") == v1
    assert reg.resolve(root, "shop") == root / "shop" / "v2"  # newest while nothing is promoted


def test_register_openai_model(tmp_path):
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "openai_job.json").write_text(json.dumps(
        {"id": "ftjob-1", "model": "gpt-4o-mini-2024-07-18", "fine_tuned_model": "ft:gpt-4o-mini:acme::x1"}))
    v = reg.register(tmp_path / "r", "shop", run)
    info = reg.show(tmp_path / "r", "shop")["versions"][0]
    assert v == 1 and info["openai_model"] == "ft:gpt-4o-mini:acme::x1"
    assert info["source"]["kind"] == "openai" and info["metrics"] == {}


def test_register_rejects_bad_input(tmp_path):
    with pytest.raises(WebtuneError, match="no model/ directory"):
        reg.register(tmp_path / "r", "shop", tmp_path)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("x")
    with pytest.raises(WebtuneError, match="neither an HF model"):
        reg.register(tmp_path / "r", "shop", tmp_path)
    with pytest.raises(WebtuneError, match="not valid"):
        reg.register(tmp_path / "r", "../evil", tmp_path)


def test_promote_requires_passing_eval_unless_forced(tmp_path, tiny_model):
    root = tmp_path / "registry"
    reg.register(root, "shop", make_run(tmp_path, tiny_model, passed=False, flags=["general_regression"]))
    with pytest.raises(WebtuneError, match=r"eval thresholds not met \(general_regression\).*--force"):
        reg.promote(root, "shop", 1)
    assert reg.read_current(root, "shop") is None
    assert reg.promote(root, "shop", 1, force=True)["forced"] is True
    run = make_run(tmp_path, tiny_model, tag="b")
    (run / "metrics.json").write_text("{}")
    reg.register(root, "shop", run)
    with pytest.raises(WebtuneError, match="no eval verdict"):
        reg.promote(root, "shop", 2)
    with pytest.raises(WebtuneError, match="no version v9"):
        reg.promote(root, "shop", 9)


def test_promote_refuses_an_unverified_run_unless_forced(tmp_path, tiny_model):
    root = tmp_path / "registry"
    run = make_run(tmp_path, tiny_model, passed=False)
    (run / "metrics.json").write_text(json.dumps({"eval": {"status": "unverified", "passed": False, "flags": []}}))
    reg.register(root, "shop", run)
    with pytest.raises(WebtuneError, match=r"unverified \(no held-out loss and no judge verdict\).*--force"):
        reg.promote(root, "shop", 1)
    assert reg.read_current(root, "shop") is None
    assert reg.promote(root, "shop", 1, force=True)["forced"] is True


def test_promote_rollback_history(registry3):
    for v in (1, 2, 3):
        reg.promote(registry3, "shop", v)
    assert reg.promote(registry3, "shop", 3)["seq"] == 3  # already serving: no new entry
    assert reg.rollback(registry3, "shop")["version"] == 2
    assert reg.rollback(registry3, "shop")["version"] == 1
    with pytest.raises(WebtuneError, match="no earlier promoted version"):
        reg.rollback(registry3, "shop")
    reg.promote(registry3, "shop", 3)
    info = check_consistent(registry3, "shop")
    assert [(h["action"], h["version"], h["from"]) for h in info["history"]] == [
        ("promote", 1, None), ("promote", 2, 1), ("promote", 3, 2), ("rollback", 2, 3),
        ("rollback", 1, 2), ("promote", 3, 1)]
    assert reg.list_models(registry3) == [{"name": "shop", "versions": [1, 2, 3], "current": 3}]
    assert reg.resolve(registry3, "shop") == registry3 / "shop" / "v3"


def test_delete(registry3):
    reg.promote(registry3, "shop", 1)
    reg.promote(registry3, "shop", 2)
    with pytest.raises(WebtuneError, match="is serving"):
        reg.delete(registry3, "shop", 2)
    reg.delete(registry3, "shop", 1)
    with pytest.raises(WebtuneError, match="v1 was deleted"):
        reg.rollback(registry3, "shop")
    with pytest.raises(WebtuneError, match="--force"):
        reg.delete(registry3, "shop")
    reg.delete(registry3, "shop", force=True)
    assert reg.list_models(registry3) == []


def run_in_child(code: str, failpoint: str = "", **kw) -> subprocess.Popen:
    env = dict(os.environ, WEBTUNE_REGISTRY_FAILPOINT=failpoint)
    return subprocess.Popen([sys.executable, "-c", "from webtune.deploy import registry as reg\n" + code],
                            env=env, **kw)


@pytest.mark.parametrize("failpoint, action", [
    ("promote:tmp-written", "reg.promote(R, 'shop', 2)"),
    ("promote:replaced", "reg.promote(R, 'shop', 2)"),
    ("rollback:tmp-written", "reg.rollback(R, 'shop')"),
    ("rollback:replaced", "reg.rollback(R, 'shop')"),
])
def test_crash_mid_promote_leaves_no_half_state(registry3, failpoint, action):
    reg.promote(registry3, "shop", 1)
    reg.promote(registry3, "shop", 3)
    before = reg.read_current(registry3, "shop")
    child = run_in_child(f"R = {str(registry3)!r}\n{action}", failpoint)
    assert child.wait(timeout=60) == -signal.SIGKILL
    after = reg.read_current(registry3, "shop")  # what a server would read right now
    if failpoint.endswith("tmp-written"):
        assert after == before  # killed before the commit point: nothing happened
    else:
        assert after["seq"] == before["seq"] + 1  # killed after it: the change stands...
    info = check_consistent(registry3, "shop")  # ...and the history catches up on the next call
    assert info["history"][-1]["seq"] == after["seq"]
    assert not list((registry3 / "shop").glob(".*.tmp"))
    reg.promote(registry3, "shop", 2)  # still usable
    check_consistent(registry3, "shop")


def test_crash_mid_register_leaves_no_version(registry3, tmp_path, tiny_model):
    run = make_run(tmp_path, tiny_model, tag="d")
    child = run_in_child(f"reg.register({str(registry3)!r}, 'shop', {str(run)!r})", "register:copied")
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert list((registry3 / "shop").glob(".tmp-*"))  # the half-built copy exists, but is no version
    assert reg.list_models(registry3)[0]["versions"] == [1, 2, 3]
    assert not list((registry3 / "shop").glob(".tmp-*"))  # cleaned once its process is gone
    assert reg.register(registry3, "shop", run) == 4


def test_random_kills_during_promotes_and_rollbacks(registry3):
    reg.promote(registry3, "shop", 1)
    loop = (f"import random\nR = {str(registry3)!r}\n"
            "while True:\n"
            "    try:\n"
            "        reg.rollback(R, 'shop') if random.random() < 0.4 else reg.promote(R, 'shop', random.randint(1, 3))\n"
            "    except reg.WebtuneError:\n"
            "        pass\n")
    rng = random.Random(0)
    history = registry3 / "shop" / "history.jsonl"
    for _ in range(8):
        before = history.read_text().count("\n")
        child = run_in_child(loop)
        deadline = time.time() + 60  # the child is under way (its start-up is slow on a loaded machine)
        while history.read_text().count("\n") <= before and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.random() * 0.3)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        check_consistent(registry3, "shop")
    assert len(reg.show(registry3, "shop")["history"]) > 8


def test_concurrent_promotes_from_several_processes(registry3):
    code = (f"import random\nR = {str(registry3)!r}\nrng = random.Random(int(__import__('sys').argv[1]))\n"
            "for _ in range(25):\n"
            "    try:\n"
            "        reg.rollback(R, 'shop') if rng.random() < 0.3 else reg.promote(R, 'shop', rng.randint(1, 3))\n"
            "    except reg.WebtuneError:\n"
            "        pass\n")
    env = dict(os.environ, WEBTUNE_REGISTRY_FAILPOINT="")
    children = [subprocess.Popen([sys.executable, "-c", "from webtune.deploy import registry as reg\n" + code,
                                  str(i)], env=env, stderr=subprocess.PIPE) for i in range(4)]
    for c in children:
        _, err = c.communicate(timeout=120)
        assert c.returncode == 0, err.decode()
    info = check_consistent(registry3, "shop")
    assert len(info["history"]) >= 20
