"""The embedded default, exactly as `make run` runs it: the tuned model beats the shipped base."""
import json

import orjson

from tests.conftest import only_run_dir, webtune


def test_default_run_tunes_the_shipped_base(tmp_path):
    runs = tmp_path / "runs"
    r = webtune("run", f"runs_dir={runs}", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run_dir(runs)
    ev = json.loads((run / "eval/metrics.json").read_text())
    assert ev["tuned"]["domain"]["loss"] < ev["base"]["domain"]["loss"] - 0.5   # a real domain gain
    assert "general_change" in ev and ev["n_general_test"] >= 50                # general regression reported
    mix = json.loads((run / "stats/mix.json").read_text())["mix"]
    assert abs(mix["realised_general_share"] - mix["target_general_share"]) <= 0.01
    ledger = [orjson.loads(x) for x in (run / "ledger.jsonl").read_bytes().splitlines()]
    counts = json.loads((run / "stats/ledger.json").read_text())["sources"]
    for source, c in counts.items():
        assert c["in"] == c["kept"] + c["rejected"] == sum(1 for x in ledger if x["source"] == source)
    html = (run / "report.html").read_text()
    assert "Side by side" in html or "side by side" in html.lower()
