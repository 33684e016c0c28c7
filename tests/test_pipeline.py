"""`webtune run` end to end through the real CLI, on the small configuration of the default."""
import json

from pathlib import Path

import orjson
import pytest

from tests.conftest import FIXTURES, REPO, SMALL, only_run_dir, webtune
from webtune.paths import SHIPPED
from webtune.fileio import copy_tree, hash_path

# whole runs (a module fixture, reproduce): 300 s was hit on a loaded 2-core machine
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory) -> Path:
    """A per-user cache of our own whose model folder holds the toy base, as `fetch-base` holds the
    real default's: evaluate keeps that base's scores there, for every later run on the machine."""
    cache = tmp_path_factory.mktemp("user-cache")
    copy_tree(FIXTURES / "tiny_model", cache / "models" / ("0" * 64))
    return cache


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, user_cache):
    runs = tmp_path_factory.mktemp("small") / "runs"
    [base] = (user_cache / "models").iterdir()
    r = webtune("run", f"runs_dir={runs}", *SMALL, f"model.name_or_path={base}", env={"WEBTUNE_CACHE": str(user_cache)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((user_cache / "eval-scores").glob("*.json"))     # the base's scores, kept per user
    return only_run_dir(runs)


def test_run_directory_has_everything(small_run):
    d = small_run
    for rel in ["config.yaml", ".hydra/config.yaml", ".hydra/overrides.yaml", "manifest.json", "data/examples.jsonl",
                "data/train.jsonl", "data/val.jsonl", "data/test.jsonl", "ledger.jsonl", "model/config.json",
                "metrics.json", "report.html", "run.log"]:
        assert (d / rel).exists(), rel
    manifest = json.loads((d / "manifest.json").read_text())
    assert {"webtune", "git_commit", "packages", "stages"} <= set(manifest)
    for stage in ("source", "prepare", "mix", "ledger", "train", "evaluate", "report"):
        entry = manifest["stages"][stage]
        assert set(entry) >= {"key", "inputs", "outputs"}
        assert all(len(h) == 64 for h in entry["outputs"].values())


def test_split_files_hold_exactly_messages(small_run):
    for split in ("train", "val", "test"):
        lines = (small_run / f"data/{split}.jsonl").read_bytes().splitlines()
        assert lines, split
        for line in lines:
            obj = orjson.loads(line)
            assert list(obj) == ["messages"]
            assert obj["messages"][-1]["role"] == "assistant"


def test_ledger_reconciles_with_the_input(small_run):
    products = json.loads((SHIPPED / "examples/products.json").read_text())
    lines = [orjson.loads(x) for x in (small_run / "ledger.jsonl").read_bytes().splitlines()]
    example = [x for x in lines if x["source"] == "example"]
    assert len(example) == len(products)                       # one line per input record
    assert len({x["id"] for x in example}) == len(products)
    assert {x["status"] for x in example} <= {"kept", "rejected"}
    rejected = [x for x in example if x["status"] == "rejected"]
    assert rejected and all(x["reason"] and x["id"].startswith("example:products.json#") for x in rejected)
    reasons = {x["reason"] for x in rejected}
    assert any(r.startswith("brightdata_error") or "error" in r for r in reasons), reasons
    assert any("duplicate" in r for r in reasons), reasons


def test_model_loads_like_a_hub_model(small_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(small_run / "model")
    tok = AutoTokenizer.from_pretrained(small_run / "model")
    ids = tok.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_resume_of_a_finished_run_skips_every_stage(small_run):
    r = webtune("resume", str(small_run))
    assert r.returncode == 0, r.stderr[-2000:]
    for stage in ("prepare", "mix", "train", "evaluate"):
        assert f"{stage}: unchanged, skipped" in r.stderr


def inodes(root: Path) -> set[tuple[int, int]]:
    return {(p.stat().st_dev, p.stat().st_ino) for p in root.rglob("*") if p.is_file()}


def hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hash_path(p) for p in root.rglob("*") if p.is_file()}


def test_reproduce_recomputes_every_stage_with_fresh_files(small_run, user_cache):
    before = hashes(small_run)
    runs = small_run.parent
    known = {p for p in runs.iterdir()}
    r = webtune("reproduce", str(small_run), env={"WEBTUNE_CACHE": str(user_cache)})
    assert r.returncode == 0, r.stderr[-3000:]
    [new] = [p for p in runs.iterdir() if p not in known]
    n_data = len([p for p in (small_run / "data").rglob("*") if p.is_file() and "raw" not in p.parts])
    assert f"all {n_data + len(list((small_run / 'ledger').rglob('*.jsonl'))) + 1} data files identical" in r.stderr
    assert "metrics identical" in r.stderr or "metrics differ" in r.stderr   # the deltas are reported either way
    for stage in ("prepare", "mix", "train", "evaluate"):
        assert f"{stage}: running" in r.stderr                         # recomputed, never restored
    assert "scoring base" in r.stderr and "scores reused" not in r.stderr   # not even the per-user base scores
    assert not inodes(new) & (inodes(small_run) | inodes(runs / ".cache"))
    assert hashes(small_run) == before


def test_reproduce_names_the_files_an_edited_raw_input_changes(small_run, tmp_path):
    runs = tmp_path / "runs"
    copy = runs / small_run.name
    copy_tree(small_run, copy)                      # a run of our own to edit; the shared one stays intact
    raw = copy / "data/raw/example/products.json"
    items = json.loads(raw.read_text())
    items[0]["title"] = "An edited title for the first product"
    raw.write_text(json.dumps(items))
    r = webtune("reproduce", str(copy), "--data-only")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "raw input data/raw/example/products.json changed since the run" in r.stderr
    assert "data/examples.jsonl" in r.stderr and "data files differ" in r.stderr
    assert "train: running" not in r.stderr


def test_ledger_command_lists_reasons_and_records(small_run):
    r = webtune("ledger", str(small_run))
    assert r.returncode == 0 and "rejections by reason" in r.stderr + r.stdout
    lines = [orjson.loads(x) for x in (small_run / "ledger.jsonl").read_bytes().splitlines()]
    reason = next(x["reason"] for x in lines if x["status"] == "rejected")
    r = webtune("ledger", str(small_run), "--reason", reason)
    assert reason in r.stdout and "example:" in r.stdout


def test_models_commands_register_promote_and_list(small_run, tmp_path):
    registry = str(tmp_path / "registry")
    r = webtune("models", "--registry", registry, "register", "shop", str(small_run))
    assert r.returncode == 0 and "registered shop@v1" in r.stdout, r.stderr
    r = webtune("models", "--registry", registry, "promote", "shop", "v1", "--force")
    assert r.returncode == 0, r.stderr
    assert "promoted shop to v1 (forced past its gate); gate " in r.stdout
    r = webtune("models", "--registry", registry, "show", "shop", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["current"]["version"] == 1
    r = webtune("models", "--registry", registry, "show", "shop")
    shown = r.stdout + r.stderr                  # the summary is the console's (stderr without a terminal)
    assert r.returncode == 0 and "shop: v1 serves" in shown and len(shown.splitlines()) < 20
    r = webtune("models", "--registry", registry, "promote", "shop", "v9")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
