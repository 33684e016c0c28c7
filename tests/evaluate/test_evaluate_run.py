"""The evaluate and report stages on a real tiny run (shared fixture: tests/evaluate/conftest.py)."""
import json
import math
import shutil

import orjson
import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from tests.conftest import FIXTURES, webtune
from webtune.evaluate import stage
from webtune.hydra_setup import setup
from webtune.chat.tokenize import ChatTokenizer

pytestmark = pytest.mark.timeout(1800)   # the shared fixture is a whole run: minutes on a busy 2-core machine


def load(path):
    return json.loads(path.read_text())


def rows(path):
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def test_metrics_hold_both_models_on_both_test_sets(tiny_run):
    ev = load(tiny_run / "eval/metrics.json")
    for label in ("base", "tuned"):
        for split in ("domain", "general"):
            s = ev[label][split]
            assert s["tokens"] > 0 and s["loss"] > 0
            assert s["perplexity"] == pytest.approx(math.exp(s["loss"]), rel=1e-3)
        assert {"rougeL", "chrF", "BLEU", "mean_words", "length_ratio"} <= set(ev[label]["generation"])
        assert ev[label]["checks"]["mentions:Brand: (.+)"]["applied"] == 6
    assert ev["domain_gain"] == pytest.approx(ev["base"]["domain"]["loss"] - ev["tuned"]["domain"]["loss"], abs=1e-3)
    assert ev["general_change"] == pytest.approx(ev["tuned"]["general"]["loss"] - ev["base"]["general"]["loss"], abs=1e-3)
    assert ev["domain_gain"] > 0, "a few training steps on the domain should lower its test loss"
    assert ev["passed"] == (ev["status"] == "passed") and ev["status"] in ("passed", "failed", "inconclusive")
    assert bool(ev["flags"]) == (ev["status"] == "failed")
    low, high = ev["domain_gain_ci"]                             # the gate decides on the paired interval
    assert low <= ev["domain_gain"] <= high and ev["evidence"]["tuned_vs_base"]["domain_loss"]["n"] == 42
    # one tokenizer, chat template and end-of-turn token for both models: the one training used
    formats = [ev[label]["format"] for label in ("base", "tuned")]
    saved = ChatTokenizer(AutoTokenizer.from_pretrained(tiny_run / "model"))
    assert formats[0] == formats[1] == stage.chat_format(saved)
    for label in ("base", "tuned"):
        eot = ev[label]["end_of_turn"]
        assert eot["n"] == ev["n_generated"] == 6 and 0 <= eot["ended"] <= 6
    top = load(tiny_run / "metrics.json")                       # what the registry's promote gate reads
    assert top["eval"]["passed"] == ev["passed"] and top["eval"]["flags"] == ev["flags"]
    assert len(rows(tiny_run / "eval/samples.jsonl")) == 4 and len(rows(tiny_run / "eval/generations.jsonl")) == 6


def test_judge_asked_both_orders_and_its_win_rate_matches_its_rule(tiny_run, fake_judge):
    ev = load(tiny_run / "eval/metrics.json")
    j = ev["judge"]
    assert j["pairs"] == 6 and j["calls"] == 12
    generations = rows(tiny_run / "eval/generations.jsonl")
    asked = fake_judge.answers_asked()
    for g in generations:        # each pair was put to the judge with the tuned answer first and second
        base, tuned = g["base"] or "(empty)", g["tuned"] or "(empty)"
        assert (tuned, base) in asked and (base, tuned) in asked
    # the fake prefers the longer answer (no keyword): the expected score of each pair follows
    expected = [1.0 if len(g["tuned"] or "(empty)") > len(g["base"] or "(empty)") else
                0.0 if len(g["tuned"] or "(empty)") < len(g["base"] or "(empty)") else 0.5 for g in generations]
    assert j["win_rate"] == pytest.approx(sum(expected) / 6)
    assert j["ci_low"] <= j["win_rate"] <= j["ci_high"]
    stderr = (tiny_run.parents[1] / "cli.stderr").read_text()
    assert "6 pairs x 2 orders = 12 calls to fake-judge" in stderr and "estimated $" in stderr


def test_no_secret_lands_in_the_run_directory(tiny_run):
    for path in tiny_run.rglob("*"):
        if path.is_file() and path.stat().st_size < 20_000_000:
            assert b"sk-judge-test" not in path.read_bytes(), path


def test_batched_loss_and_generation_match_one_at_a_time(tiny_run):
    """Padding must not change a single number: batched (padded) == unbatched."""
    import torch
    from omegaconf import OmegaConf
    setup()
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    model, chat = stage.load_for_eval(str(tiny_run / "model"), cfg.model), ChatTokenizer.for_model(cfg.model)
    convs = stage.read_test(tiny_run / "data/test.jsonl")[:4]
    batched = stage.heldout_loss(model, chat, convs, batch_size=4)
    total, count = 0.0, 0
    for c in convs:                               # the model's own loss, one example at a time
        ids, labels = chat.encode(c)
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
        n = sum(1 for x in labels[1:] if x != -100)
        total, count = total + out.loss.item() * n, count + n
    assert batched["tokens"] == count
    assert batched["loss"] == pytest.approx(total / count, abs=2e-3)
    prompts = [c[:-1] for c in convs[:3]]
    together, ended = stage.generate(model, chat, prompts, max_new_tokens=6, batch_size=3)
    alone = [stage.generate(model, chat, [p], max_new_tokens=6, batch_size=1) for p in prompts]
    assert together == [a[0][0] for a in alone] and ended == [a[1][0] for a in alone]


def test_eval_command_re_evaluates_with_overrides_and_compare_shows_both(tiny_run, tmp_path):
    again = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, again, symlinks=True)
    r = webtune("eval", str(again), "eval.min_domain_gain=100", "eval.judge.enabled=false")
    assert r.returncode == 0, r.stderr[-3000:]
    # same models, same test set: nothing is scored twice, only the verdict changes
    assert "base scores reused from" in r.stderr and "tuned scores reused from" in r.stderr
    ev = load(again / "eval/metrics.json")
    assert ev["passed"] is False and "eval.min_domain_gain=100" in ev["flags"][0]
    assert "judge" not in ev and ev["settings"]["min_domain_gain"] == 100
    assert load(again / "metrics.json")["eval"]["passed"] is False
    assert "FLAGGED" in (again / "report.html").read_text()
    kept = OmegaConf.load(again / "config.yaml")          # a later resume keys evaluate from these
    assert kept.eval.min_domain_gain == 100 and kept.eval.judge.enabled is False
    out = tmp_path / "compare.html"
    r = webtune("compare", str(tiny_run), str(again), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    html = out.read_text()
    assert "eval.min_domain_gain" in html and "flagged" in html and "passed" in html


def test_a_lora_adapter_directory_is_evaluated_on_its_base(tiny_run, tmp_path):
    """A fresh LoRA adapter (B = 0) changes nothing: its loss must equal its base's."""
    from omegaconf import OmegaConf
    from peft import LoraConfig, get_peft_model
    setup()
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    cfg.model.name_or_path = str(tiny_run / "model")
    base, chat = stage.load_for_eval(str(tiny_run / "model"), cfg.model), ChatTokenizer.for_model(cfg.model)
    convs = stage.read_test(tiny_run / "data/test.jsonl")[:3]
    expected = stage.heldout_loss(base, chat, convs, batch_size=3)
    adapter = tmp_path / "adapter"
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    chat.tok.save_pretrained(adapter)
    model = stage.load_for_eval(str(adapter), cfg.model)
    assert not (adapter / "config.json").exists()
    assert stage.heldout_loss(model, chat, convs, batch_size=3) == expected


def test_report_of_a_run_not_yet_evaluated_still_renders_every_section(tiny_run, tmp_path):
    from webtune.hydra_setup import load_run_config
    from webtune.report import stage as report
    run = tmp_path / "partial"
    shutil.copytree(tiny_run, run, symlinks=True)
    shutil.rmtree(run / "eval")
    (run / "stats/train.json").unlink()
    report.run(load_run_config(run), run)
    html = (run / "report.html").read_text()
    for section in report.REPORT_SECTIONS:
        assert f'<section id="{section}">' in html
    assert "NOT EVALUATED" in html and "Not evaluated yet" in html
    assert load(run / "metrics.json")["eval"] == {}


def test_base_and_tuned_scored_with_different_templates_fail(tiny_run, tmp_path):
    """The tuned model's saved tokenizer must carry the config's chat template: scoring it with another
    one (here: the base folder's own template vs a config naming Llama 3.1's) stops the evaluation."""
    from omegaconf import OmegaConf
    from webtune.errors import WebtuneError
    from webtune.paths import SHIPPED
    setup()
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    trained_with = ChatTokenizer.for_model(cfg.model)
    stage.check_saved_tokenizer(trained_with, tiny_run / "model")     # the run's own: fine
    cfg.model.chat_template = str(SHIPPED / "templates/chat/llama31.j2")
    other = ChatTokenizer.for_model(cfg.model)
    assert stage.chat_format(other) != stage.chat_format(trained_with)
    with pytest.raises(WebtuneError, match="trained with another chat template"):
        stage.check_saved_tokenizer(other, tiny_run / "model")
    results = {"base": {"domain": {"loss": 3.0}, "format": stage.chat_format(trained_with)},
               "tuned": {"domain": {"loss": 2.0}, "format": stage.chat_format(other)}}
    with pytest.raises(WebtuneError, match="different tokenizers or chat templates"):
        stage.check_same_format(results)


def test_heldout_examples_longer_than_max_seq_len_are_left_out_as_in_training(tiny_run):
    from omegaconf import OmegaConf
    setup()
    cfg = OmegaConf.load(tiny_run / "config.yaml")
    model, chat = stage.load_for_eval(str(tiny_run / "model"), cfg.model), ChatTokenizer.for_model(cfg.model)
    convs = stage.read_test(tiny_run / "data/test.jsonl")[:4]
    lengths = sorted(len(chat.encode(c)[0]) for c in convs)
    limit = lengths[1]                        # two examples are longer than this (or equal lengths)
    scored = stage.heldout_loss(model, chat, convs, batch_size=4, limit=limit)
    longer = sum(n > limit for n in lengths)
    assert longer >= 1 and scored["over_length"] == longer and scored["examples"] == 4 - longer
    short = [c for c in convs if len(chat.encode(c)[0]) <= limit]
    assert scored == {**stage.heldout_loss(model, chat, short, batch_size=4), "over_length": longer}


def test_a_base_from_the_model_cache_is_scored_once_per_machine(tiny_run, tmp_path):
    """A base in $WEBTUNE_CACHE/models/<sha256>/ (where the default's SmolLM2 is converted) keeps its scores
    in the per-user cache: a run under another runs_dir (another folder, another clone) reuses them and
    scores only its own tuned model; WEBTUNE_NO_CACHE=1 scores the base again."""
    cache = tmp_path / "cache"
    base = cache / "models" / ("ab" * 32)
    shutil.copytree(FIXTURES / "tiny_model", base)
    said = []
    for n, env in ((1, {}), (2, {}), (3, {"WEBTUNE_NO_CACHE": "1"})):
        runs = tmp_path / f"runs{n}"
        run = runs / tiny_run.name
        shutil.copytree(tiny_run, run, symlinks=True)
        r = webtune("eval", str(run), f"model.name_or_path={base}", f"runs_dir={runs}", "eval.judge.enabled=false",
                    env={"WEBTUNE_CACHE": str(cache), **env})
        assert r.returncode == 0, r.stderr[-3000:]
        said.append(r.stderr)
    [kept] = list((cache / "eval-scores").glob("*.json"))
    assert "scoring base" in said[0] and "scoring tuned" in said[0]
    assert f"base scores reused from {kept}" in said[1] and "scoring tuned" in said[1]
    assert "scoring base" in said[2] and "base scores reused" not in said[2]
    first, second = (load(tmp_path / f"runs{n}" / tiny_run.name / "eval/metrics.json") for n in (1, 2))
    assert first["base"] == second["base"] and first["tuned"]["domain"] == second["tuned"]["domain"]
