"""The gate decides on 95% intervals of paired differences (evidence.verdict), with the thresholds in `eval`:
passed, failed, inconclusive (an interval straddles a threshold) or unverified (no loss and no judge);
and the paired statistics it reads (paired.compare: seeded bootstrap, McNemar exact)."""
import math

import pytest
from omegaconf import OmegaConf

from webtune.config import EvalConfig
from webtune.evaluate import paired
from webtune.evaluate.evidence import comparisons, verdict


def cfg(**kw):
    return OmegaConf.merge(OmegaConf.structured(EvalConfig), kw)


def losses(per_token: list[float], tokens: int = 10) -> dict:
    """Per-item scores of held-out loss: summed nats and token counts, ids i0, i1, ..."""
    return {"domain_loss": {f"i{k}": x * tokens for k, x in enumerate(per_token)},
            "domain_loss_tokens": {f"i{k}": tokens for k in range(len(per_token))}}


def evidence(base: dict, tuned: dict, **more) -> dict:
    out = {"tuned_vs_base": comparisons(base, tuned, seed=0, resamples=1000, old_label="base", new_label="tuned")}
    for label, old in more.items():
        out[f"tuned_vs_{label}"] = comparisons(old, tuned, seed=0, resamples=1000, old_label=label, new_label="tuned")
    return out


BASE = [3.0 + 0.1 * (k % 5) for k in range(30)]


def test_a_clear_domain_gain_passes_and_its_interval_holds_the_point():
    v = verdict(cfg(min_domain_gain=0.5), evidence(losses(BASE), losses([x - 1.0 + 0.05 * (k % 3) for k, x in enumerate(BASE)])))
    assert v["status"] == "passed" and v["passed"] and v["flags"] == [] and v["undecided"] == []
    low, high = v["domain_gain_ci"]
    assert 0.5 < low <= v["domain_gain"] <= high < 1.0


def test_a_gain_whose_interval_straddles_the_threshold_is_inconclusive():
    noisy = [x - 0.2 + (0.6 if k % 2 else -0.6) for k, x in enumerate(BASE)]    # mean gain 0.2, wide spread
    v = verdict(cfg(min_domain_gain=0.2), evidence(losses(BASE), losses(noisy)))
    assert v["status"] == "inconclusive" and not v["passed"] and v["flags"] == []
    assert "straddles eval.min_domain_gain=0.2" in v["undecided"][0]


def test_a_gain_wholly_below_the_threshold_fails():
    v = verdict(cfg(min_domain_gain=0.5), evidence(losses(BASE), losses([x - 0.1 for x in BASE])))
    assert v["status"] == "failed" and "below eval.min_domain_gain=0.5" in v["flags"][0]


def test_too_few_test_examples_is_inconclusive_not_passed():
    v = verdict(cfg(), evidence(losses(BASE[:3]), losses([x - 1 for x in BASE[:3]])))
    assert v["status"] == "inconclusive" and "too few test examples" in v["undecided"][0]


def test_a_general_regression_decides_on_its_upper_bound():
    def general(per_token):
        return {k.replace("domain", "general"): v for k, v in losses(per_token).items()}
    gain = {**losses(BASE)}, {**losses([x - 1 for x in BASE])}
    rise = lambda d: [x + d + (0.3 if k % 2 else -0.3) for k, x in enumerate(BASE)]   # noqa: E731
    above = verdict(cfg(max_general_regression=0.5), evidence({**gain[0], **general(BASE)}, {**gain[1], **general(rise(1.0))}))
    assert above["status"] == "failed" and "above eval.max_general_regression=0.5" in above["flags"][0]
    near = verdict(cfg(max_general_regression=0.5), evidence({**gain[0], **general(BASE)}, {**gain[1], **general(rise(0.45))}))
    assert near["status"] == "inconclusive" and "straddles eval.max_general_regression" in near["undecided"][0]
    assert near["general_change_ci"][0] < 0.5 < near["general_change_ci"][1]


def test_chrf_significantly_worse_fails_even_with_a_loss_gain():
    """The SQLite case of issue 27: loss fell, chrF halved; the gate must not pass it."""
    base = {**losses(BASE), "chrF": {f"i{k}": 20.0 + k % 4 for k in range(30)}}
    tuned = {**losses([x - 0.2 for x in BASE]), "chrF": {f"i{k}": 10.0 + k % 3 for k in range(30)}}
    v = verdict(cfg(), evidence(base, tuned))
    assert v["status"] == "failed" and v["domain_gain"] == pytest.approx(0.2)
    assert v["flags"][0].startswith("chrF per answer significantly worse than the base")


def test_a_binary_rate_is_decided_by_mcnemar_and_lists_the_newly_failing_items():
    base = {"unsupported_values": {f"i{k}": 0 for k in range(20)}}
    tuned = {"unsupported_values": {f"i{k}": int(k < 7) for k in range(20)}}    # 7 answers now invent a value
    c = evidence(base, tuned)["tuned_vs_base"]["unsupported_values"]
    assert c["significant"] == "worse" and c["newly_failing"] == 7 and c["newly_passing"] == 0
    assert c["worse_items"] == [f"i{k}" for k in range(7)]
    assert c["p"] == pytest.approx(2 / 2 ** 7, abs=1e-4)
    few = evidence(base, {"unsupported_values": {f"i{k}": int(k < 2) for k in range(20)}})
    assert few["tuned_vs_base"]["unsupported_values"]["significant"] is None    # 2 discordant: p = 0.5


def test_worse_than_the_promoted_version_fails_though_better_than_the_base():
    base, promoted = losses(BASE), losses([x - 1.0 for x in BASE])
    tuned = losses([x - 0.5 for x in BASE])
    v = verdict(cfg(), evidence(base, tuned, promoted=promoted))
    assert v["status"] == "failed" and len(v["flags"]) == 1
    assert "significantly worse than the promoted" in v["flags"][0]


def test_without_losses_or_a_judge_the_run_is_unverified_and_does_not_pass():   # an API-tuned model
    v = verdict(cfg(), {"tuned_vs_base": {}})
    assert v["status"] == "unverified" and not v["passed"] and v["domain_gain"] is None


def test_without_losses_the_judge_decides():
    assert verdict(cfg(), {"tuned_vs_base": {}}, {"win_rate": 0.75})["status"] == "passed"
    lost = verdict(cfg(), {"tuned_vs_base": {}}, {"win_rate": 0.25})
    assert lost["status"] == "failed" and "25% of pairs" in lost["flags"][0]


def test_the_bootstrap_is_seeded_and_the_ratio_is_the_token_weighted_difference():
    old = {f"i{k}": float(k) for k in range(40)}
    new = {f"i{k}": float(k) + (k % 7) - 3 for k in range(40)}
    tokens = {f"i{k}": 1 + k % 5 for k in range(40)}
    a = paired.compare("m", old, new, kind="ratio", weights=tokens, seed=3)
    assert a == paired.compare("m", old, new, kind="ratio", weights=tokens, seed=3)
    assert a["diff"] == pytest.approx(sum(new[i] - old[i] for i in old) / sum(tokens.values()), abs=1e-4)
    assert a["low"] <= a["diff"] <= a["high"]


def test_mcnemar_exact_matches_the_binomial():
    assert paired.mcnemar_exact(0, 0) == 1.0
    assert paired.mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert paired.mcnemar_exact(3, 9) == pytest.approx(2 * sum(math.comb(12, i) for i in range(4)) / 2 ** 12)


def test_a_significant_but_small_loss_against_the_promoted_counts_only_beyond_its_margin():
    """Non-inferiority: a candidate 0.02 nats/token worse on general loss than the promoted version (an
    interval that leaves out 0 but lies inside eval.margins.general_loss=0.05) is not failed for it; 0.2
    worse is; with the margin at 0 the small one fails too."""
    gained = [x - 1.0 for x in BASE]
    def general(per_token):
        return {"general_loss": {f"g{k}": x * 10 for k, x in enumerate(per_token)},
                "general_loss_tokens": {f"g{k}": 10 for k in range(len(per_token))}}
    promoted = {**losses(gained), **general(BASE)}
    def run(shift, margins):
        e = cfg(min_domain_gain=0.5, margins=margins)
        tuned = {**losses(gained), **general([x + shift + 0.002 * (k % 3) for k, x in enumerate(BASE)])}
        ev = {label: comparisons(old, tuned, seed=0, resamples=1000, old_label=name, new_label="tuned",
                                 margins=e.margins)
              for label, name, old in (("tuned_vs_base", "base", {**losses(BASE), **general(BASE)}),
                                       ("tuned_vs_promoted", "promoted", promoted))}
        return ev["tuned_vs_promoted"]["general_loss"], verdict(e, ev)
    small, v = run(0.02, {"general_loss": 0.05})
    assert small["significant"] is None and small["within_margin"] == 0.05 and small["low"] > 0
    assert v["status"] == "passed" and "by less than its margin" in paired.describe(small)
    large, v = run(0.2, {"general_loss": 0.05})
    assert large["significant"] == "worse" and v["status"] == "failed"
    strict, v = run(0.02, {"general_loss": 0.0})
    assert strict["significant"] == "worse" and v["status"] == "failed"
