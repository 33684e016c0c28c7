"""`webtune models show` and `promote` print a short summary a person reads (`--json`: the record)."""
import json
from argparse import Namespace

from rich.console import Console

from tests.conftest import FIXTURES
from webtune.deploy import registry as reg
from webtune.deploy.cli import models_command
from webtune.deploy.summary import moved, show_table


def a_run(root, gain, status):
    import shutil
    shutil.copytree(FIXTURES / "tiny_model", root / "model")
    (root / "metrics.json").write_text(json.dumps({
        "eval": {"status": status, "passed": status == "passed", "domain_gain": gain, "general_change": 0.02,
                 "flags": [], "tuned": {"generation": {"chrF": 38.1}}},
        "train": {"steps": 12, "base_model": {"upstream": "google/gemma-3-270m", "licence": "Gemma Terms of Use"}}}))
    return root


def test_show_and_promote_read_as_sentences_and_json_keeps_the_record(tmp_path, capsys):
    registry = tmp_path / "registry"
    for i, (gain, status) in enumerate([(0.41, "passed"), (0.05, "inconclusive")], 1):
        reg.register(registry, "shop", a_run(tmp_path / f"run{i}", gain, status))
    models = lambda action, **kw: models_command(Namespace(registry=str(registry), action=action, name="shop", **kw))  # noqa: E731
    models("promote", version="v1", force=False, json=False)
    assert capsys.readouterr().out.strip() == ("promoted shop to v1; gate passed · domain gain +0.410 · general +0.020 "
                                               "· chrF 38.1")
    models("promote", version="2", force=True, json=False)
    assert capsys.readouterr().out.startswith("promoted shop to v2 (was v1) (forced past its gate); gate inconclusive")
    models("promote", version="2", force=True, json=False)
    assert capsys.readouterr().out.startswith("shop: v2 already serves; gate inconclusive")
    models("rollback", json=True)
    assert json.loads(capsys.readouterr().out)["version"] == 1

    data = reg.show(registry, "shop")
    console = Console(record=True, width=200)
    console.print(show_table(data))
    text = console.export_text()
    assert text.startswith("shop: v1 serves (since ") and "rollback)" in text.splitlines()[0]
    assert next(line for line in text.splitlines() if "▶" in line).split("│")[2].strip() == "v1"
    assert "inconclusive" in text and "google/gemma-3-270m (Gemma Terms of Use)" in text
    assert len(text.splitlines()) < 12
    assert moved("shop", data["current"], data).startswith("rolled shop back to v1 (from v2)")
