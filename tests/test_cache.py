"""The content-keyed stage cache (issue 11): a key is config section + external files + input hashes +
code version; a key that is in `runs/.cache/<stage>/<key>/` is restored by hard links, nothing else is.

The first tests drive the real Runner with two small stages of our own (milliseconds); the last ones
run the real pipeline through the CLI on the small configuration.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, SMALL
from tests.test_resume import stages_done, start, stop_when
from webtune.rundir import new_run_dir
from webtune.fileio import hash_path, read_json
from webtune.runner import Runner, Stage, code_version, stage_key
from webtune.paths import SHIPPED


# ------------------------------------------------------------------ two stages of our own
def toy_stages(calls: list[str]) -> list[Stage]:
    """`render` reads a template file from outside the run dir; `train` reads render's output."""
    def render(ctx):
        calls.append("render")
        out = ctx.run_dir / "data/examples.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        tpl = Path(ctx.cfg.template.file).read_text()
        out.write_text("".join(tpl.replace("{x}", str(i)) for i in range(ctx.cfg.template.n)))
        return {"examples": ctx.cfg.template.n}

    def train(ctx):
        calls.append("train")
        text = (ctx.run_dir / "data/examples.txt").read_text()
        (ctx.run_dir / "model").mkdir(exist_ok=True)
        (ctx.run_dir / "model/weights.txt").write_text(f"lr={ctx.cfg.train.lr} chars={len(text)}\n")

    return [Stage("render", render, config=["template"], outputs=["data/examples.txt"],
                  external=lambda cfg: [Path(cfg.template.file)]),
            Stage("train", train, config=["train"], inputs=["data/examples.txt"], outputs=["model"])]


@pytest.fixture
def toy(tmp_path):
    tpl = tmp_path / "tpl.txt"
    tpl.write_text("Describe item {x}.\nAnswer: item {x} is fine.\n")
    runs = tmp_path / "runs"
    calls: list[str] = []

    def run(**over):
        cfg = OmegaConf.create({"runs_dir": str(runs), "template": {"file": str(tpl), "n": 3}, "train": {"lr": 1e-3}})
        for k, v in over.items():
            OmegaConf.update(cfg, k, v)
        run_dir = new_run_dir(runs, "toy")
        logs: list[str] = []
        manifest = Runner(cfg, run_dir, toy_stages(calls), console=None, log=logs.append).run()
        return run_dir, manifest, logs

    return type("Toy", (), {"tpl": tpl, "runs": runs, "calls": calls, "run": staticmethod(run)})


def test_same_config_in_a_new_run_dir_is_hard_linked_from_the_cache(toy):
    first, m1, _ = toy.run()
    second, m2, logs = toy.run()
    assert toy.calls == ["render", "train"]                       # the second run computed nothing
    assert m2["stages"]["render"]["cached"] and m2["stages"]["train"]["cached"]
    assert any("restored from cache" in line for line in logs)
    key = m2["stages"]["render"]["key"]
    cached = toy.runs / ".cache/render" / key / "data/examples.txt"
    assert os.stat(cached).st_ino == os.stat(second / "data/examples.txt").st_ino   # a hard link, not a copy
    assert (second / "model/weights.txt").read_text() == (first / "model/weights.txt").read_text()
    assert m2["stages"]["render"]["outputs"] == m1["stages"]["render"]["outputs"]


def test_one_line_template_edit_changes_the_key_and_reruns_everything_after(toy):
    _, m1, _ = toy.run()
    toy.tpl.write_text(toy.tpl.read_text().replace("is fine", "is excellent"))   # one line
    second, m2, _ = toy.run()
    assert toy.calls == ["render", "train", "render", "train"]
    assert m2["stages"]["render"]["key"] != m1["stages"]["render"]["key"]
    assert m2["stages"]["train"]["key"] != m1["stages"]["train"]["key"]       # its input changed
    assert not m2["stages"]["render"]["cached"] and not m2["stages"]["train"]["cached"]
    assert "excellent" in (second / "data/examples.txt").read_text()
    assert len(list((toy.runs / ".cache/render").iterdir())) == 2


def test_unrelated_config_value_reuses_the_earlier_stage(toy):
    _, m1, _ = toy.run()
    _, m2, _ = toy.run(**{"train.lr": 3e-4})
    assert toy.calls == ["render", "train", "train"]
    assert m2["stages"]["render"]["cached"] and m2["stages"]["render"]["key"] == m1["stages"]["render"]["key"]
    assert not m2["stages"]["train"]["cached"]
    assert [p.name for p in (toy.runs / ".cache/render").iterdir()] == [m1["stages"]["render"]["key"]]


def test_an_unfinished_cache_entry_is_never_restored(toy):
    """A run killed while storing leaves `<key>.tmp<pid>/` or a `<key>/` without `.complete`."""
    cfg = OmegaConf.create({"runs_dir": str(toy.runs), "template": {"file": str(toy.tpl), "n": 3}, "train": {"lr": 1e-3}})
    probe = new_run_dir(toy.runs, "probe")
    key, _ = stage_key(toy_stages([])[0], cfg, probe)
    half = toy.runs / ".cache/render" / key / "data"
    half.mkdir(parents=True)
    (half / "examples.txt").write_text("Describe item 0.\nAns")                    # cut off, no .complete
    run_dir, manifest, _ = toy.run()
    assert toy.calls == ["render", "train"]
    assert not manifest["stages"]["render"]["cached"]
    assert (run_dir / "data/examples.txt").read_text().count("Answer:") == 3
    # the unfinished entry is replaced by the finished one, so the next run reuses it
    assert (toy.runs / ".cache/render" / key / ".complete").exists()
    _, manifest, _ = toy.run()
    assert toy.calls == ["render", "train"] and manifest["stages"]["render"]["cached"]


def test_a_cached_file_changed_in_place_is_not_restored(toy):
    """Run dirs share inodes with the cache: appending to a run's output in place also changes the cache
    entry. A restore must check the entry against the hashes it was stored with, never hand it on."""
    first, m1, _ = toy.run()
    good = hash_path(first / "data/examples.txt")
    with open(first / "data/examples.txt", "a") as fh:       # in place: same inode as the cache entry
        fh.write("Describe item 99.\nAnswer: hand-edited.\n")
    second, m2, _ = toy.run()
    assert hash_path(second / "data/examples.txt") == good, "a changed cache entry was restored as if it were valid"
    assert m2["stages"]["render"]["outputs"]["data/examples.txt"] == good


def test_code_version_is_part_of_every_key(tmp_path):
    """A copy of webtune whose source differs by one comment gives other keys for the same config and inputs."""
    copy = tmp_path / "src"
    shutil.copytree(REPO / "src/webtune", copy / "webtune", ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "webtune/records.py", "a") as fh:
        fh.write("# a code change\n")
    (tmp_path / "run").mkdir()
    probe = ("import json, sys\nfrom omegaconf import OmegaConf\nimport webtune.runner as r\n"
             "st = r.Stage('probe', run=lambda c: None, config=['a'])\n"
             "key, _ = r.stage_key(st, OmegaConf.create({'a': 1}), sys.argv[1])\n"
             "print(json.dumps({'file': r.__file__, 'code': r.code_version(), 'key': key}))")

    def keys(pythonpath: Path) -> dict:
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "run")], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    original, changed = keys(REPO / "src"), keys(copy)
    assert changed["file"].startswith(str(copy))                  # the copy was the code that ran
    assert original["code"] == code_version()
    assert changed["code"] != original["code"]
    assert changed["key"] != original["key"]


# ------------------------------------------------------------------ the real pipeline, through the CLI
def copy_template(root: Path) -> Path:
    """The default's template + its Jinja and schema files, as a user's own config dir."""
    (root / "conf/template").mkdir(parents=True)
    shutil.copytree(SHIPPED / "templates/product_description", root / "tpl")
    text = (SHIPPED / "conf/template/product_description.yaml").read_text()
    text = text.replace("templates/product_description/", f"{root / 'tpl'}/").replace(
        "name: product_description\ntasks", "name: product_copy\ntasks", 1)
    (root / "conf/template/product_copy.yaml").write_text(text)
    return root / "conf"


def manifest(run_dir: Path) -> dict:
    return read_json(run_dir / "manifest.json")["stages"]


def newest_run(runs: Path, known: set[Path]) -> Path:
    new = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".") and p not in known]
    assert len(new) == 1, new
    return new[0]


def run_through_train(runs: Path, known: set[Path], args: list[str], out: Path) -> Path:
    """The real CLI until its train stage is recorded; evaluate and report are not what is tested here."""
    proc = start(args, out)

    def trained():
        new = [p for p in runs.glob("*_*") if p.is_dir() and p not in known] if runs.is_dir() else []
        return len(new) == 1 and "train" in stages_done(new[0])
    try:
        stop_when(proc, trained, "the train stage")
    except AssertionError:
        raise AssertionError(out.read_text()[-3000:]) from None
    return newest_run(runs, known)


# three runs through training in the module fixture: minutes on a busy 2-core machine, counted in the
# first test's timeout (pytest-timeout includes fixture set-up)
THREE_RUNS = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def pipeline_runs(tmp_path_factory):
    """A: the copied template; C: A with another learning rate; B: A with one template line edited."""
    root = tmp_path_factory.mktemp("cache")
    conf = copy_template(root)
    runs = root / "runs"
    # one training step: the keys, not the model, are under test here
    small = [o for o in SMALL if not o.startswith("model.train.max_steps=")] + ["model.train.max_steps=1"]
    base = ["run", "--config-dir", str(conf), "template=product_copy", f"runs_dir={runs}", *small]
    a = run_through_train(runs, set(), base, root / "a.out")
    c = run_through_train(runs, {a}, base + ["model.train.learning_rate=3e-4"], root / "c.out")
    prepare_keys_after_c = sorted(p.name for p in (runs / ".cache/prepare").iterdir())
    user = root / "tpl/user.j2"
    lines = user.read_text().splitlines(keepends=True)
    assert lines[0] == "Write a product description for this item.\n"
    user.write_text("Write a short product description for this item.\n" + "".join(lines[1:]))
    b = run_through_train(runs, {a, c}, base, root / "b.out")
    return {"runs": runs, "a": a, "b": b, "c": c, "prepare_keys_after_c": prepare_keys_after_c}


@THREE_RUNS
def test_learning_rate_change_does_not_redo_prepare_or_mix(pipeline_runs):
    a, c = manifest(pipeline_runs["a"]), manifest(pipeline_runs["c"])
    for stage in ("prepare", "mix", "ledger"):
        assert c[stage]["cached"], stage
        assert c[stage]["key"] == a[stage]["key"], stage
    assert not c["train"]["cached"] and c["train"]["key"] != a["train"]["key"]
    assert pipeline_runs["prepare_keys_after_c"] == [a["prepare"]["key"]]      # one prepare key in the cache
    run_c = pipeline_runs["c"]
    assert "prepare: running" not in (run_c / "run.log").read_text()
    for rel in ("data/examples.jsonl", "data/train.jsonl", "data/packed", "ledger.jsonl"):
        assert hash_path(run_c / rel) == hash_path(pipeline_runs["a"] / rel), rel
    ino = os.stat(run_c / "data/examples.jsonl").st_ino                  # complete on its own, by hard link
    assert ino == os.stat(pipeline_runs["a"] / "data/examples.jsonl").st_ino


@THREE_RUNS
def test_template_edit_changes_the_key_the_output_and_reruns_what_follows(pipeline_runs):
    a, b = manifest(pipeline_runs["a"]), manifest(pipeline_runs["b"])
    assert b["prepare"]["key"] != a["prepare"]["key"] and not b["prepare"]["cached"]
    assert b["prepare"]["outputs"]["data/examples.jsonl"] != a["prepare"]["outputs"]["data/examples.jsonl"]
    for stage in ("mix", "train"):                   # their inputs changed, so they ran again
        assert b[stage]["key"] != a[stage]["key"] and not b[stage]["cached"], stage
    # ledger reads only the ledger events: reused exactly when those are byte-identical
    assert b["ledger"]["cached"] == (b["ledger"]["inputs"] == a["ledger"]["inputs"])
    examples = [orjson.loads(x) for x in (pipeline_runs["b"] / "data/examples.jsonl").read_bytes().splitlines()]
    users = [e["messages"][1]["content"] for e in examples if e["template"] == "product_description"]
    assert users and all(u.startswith("Write a short product description") for u in users)
    assert sorted(p.name for p in (pipeline_runs["runs"] / ".cache/prepare").iterdir()) == sorted(
        [a["prepare"]["key"], b["prepare"]["key"]])


# ------------------------------------------------------------------ complete keys (issue 16)
def stage_named(name: str) -> Stage:
    from webtune.stages import build_stages
    return next(s for s in build_stages() if s.name == name)


@pytest.fixture
def composed(tmp_path):
    from tests.conftest import TINY_MODEL
    from webtune.hydra_setup import validate_overrides
    return lambda *over: validate_overrides([f"runs_dir={tmp_path / 'runs'}", *TINY_MODEL, *over])


def test_mix_key_holds_eos_token_and_library_versions_but_not_the_learning_rate(composed, tmp_path):
    mix, versions = stage_named("mix"), {"transformers": "5.0.0", "tokenizers": "0.22.0", "jinja2": "3.1.6"}
    base, _ = stage_key(mix, composed(), tmp_path, versions)
    assert stage_key(mix, composed("model.eos_token='</s>'"), tmp_path, versions)[0] != base
    assert stage_key(mix, composed(), tmp_path, {**versions, "tokenizers": "0.23.0"})[0] != base
    assert stage_key(mix, composed("model.train.learning_rate=1e-5"), tmp_path, versions)[0] == base
    assert stage_key(stage_named("train"), composed(), tmp_path, versions)[0] != \
        stage_key(stage_named("train"), composed("mix.max_seq_len=256"), tmp_path, versions)[0]


def test_a_stage_sees_only_the_config_its_key_holds(tmp_path):
    from omegaconf.errors import ConfigAttributeError
    seen = {}

    def sneaky(ctx):
        seen["a"] = ctx.cfg.a
        return {"b": ctx.cfg.b}        # not in config=[...]: it could go stale, so it must fail

    cfg = OmegaConf.create({"runs_dir": str(tmp_path / "runs"), "a": 1, "b": 2})
    stage = Stage("sneaky", sneaky, config=["a"], outputs=[])
    with pytest.raises(ConfigAttributeError, match="b"):
        Runner(cfg, new_run_dir(tmp_path / "runs", "x"), [stage], None, log=lambda m: None).run()
    assert seen == {"a": 1}


def test_a_library_version_change_reruns_mix(composed, tmp_path):
    from rich.console import Console
    from webtune.stages import build_stages
    products = json.loads((SHIPPED / "examples/products.json").read_text())[:40]
    (tmp_path / "products.json").write_text(json.dumps(products))
    cfg = composed(f"source.files.paths=[{tmp_path / 'products.json'}]", "mix.general.enabled=false",
                   "prepare.workers=1")
    run_dir = new_run_dir(tmp_path / "runs", "versions")
    quiet, data = Console(quiet=True), {"source", "prepare", "mix"}

    def mix_verdict(versions):
        lines = []
        Runner(cfg, run_dir, build_stages(), quiet, log=lines.append, versions=versions).run(only=data)
        return next(line for line in lines if line.startswith(("mix", "[bold]mix", "[dim]mix")))

    versions = {"transformers": "5.0.0", "tokenizers": "0.22.0"}
    assert "running" in mix_verdict(versions)
    assert "unchanged, skipped" in mix_verdict(versions)
    assert "running" in mix_verdict({**versions, "transformers": "5.1.0"})


def test_eval_overrides_are_written_into_the_run_config(tmp_path, composed):
    from webtune.errors import WebtuneError
    from webtune.rundir import merge_run_config
    run_dir = new_run_dir(tmp_path / "runs", "evaluated")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(composed(), resolve=True))
    merged = merge_run_config(run_dir, ["eval.judge.enabled=true", "eval.samples=3"])
    saved = OmegaConf.load(run_dir / "config.yaml")
    assert saved.eval.judge.enabled is True and saved.eval.samples == 3 and merged.eval.samples == 3
    assert saved.model.name_or_path == composed().model.name_or_path     # everything else kept
    with pytest.raises(WebtuneError, match=r"config.yaml: overrides eval.sampels=3: .*sampels"):
        merge_run_config(run_dir, ["eval.sampels=3"])
    assert OmegaConf.load(run_dir / "config.yaml").eval.samples == 3      # a refused override writes nothing
