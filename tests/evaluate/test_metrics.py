"""Generation metrics and the template-declared task checks."""
import pytest
import sacrebleu

from webtune.errors import WebtuneError
from webtune.evaluate.metrics import (check_rates, corpus_scores, length_stats, rouge_l, rouge_tokens, run_check,
                                         validate_check)


def test_rouge_l_is_lcs_f1_over_words():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rouge_l("", "anything") == 0.0 and rouge_l("dog", "cat") == 0.0
    # LCS("a b c d", "a c d e") = "a c d" (3): p = 3/4, r = 3/4
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    # order matters (unlike bag-of-words): LCS("d c b a", "a b c d") = 1
    assert rouge_l("d c b a", "a b c d") == pytest.approx(0.25)
    assert rouge_l("The CAT", "the cat") == 1.0


def test_rouge_l_tokenizes_as_rouge_score_does():
    # rouge_score.tokenize: lower-case; every run of characters outside a-z0-9 separates tokens, so
    # punctuation never hides a match (a whitespace split would score this 0.5)
    assert rouge_tokens("Hello, world! It's 9:30.") == ["hello", "world", "it", "s", "9", "30"]
    assert rouge_l("Hello, world!", "hello world") == 1.0
    assert rouge_tokens("Café crème — ok") == ["caf", "cr", "me", "ok"]   # non-ASCII letters separate too


def test_corpus_scores_use_sacrebleu_and_report_lengths():
    hyps = ["the quick brown fox jumps", "hello world", ""]
    refs = ["the quick brown fox jumped", "hello there world", "a reference"]
    s = corpus_scores(hyps, refs)
    assert s["chrF"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    assert s["BLEU"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert s["rougeL"] == round(100 * (0.8 + 0.8 + 0.0) / 3, 2)
    assert s["empty"] == 1 and s["max_words"] == 5 and s["mean_words"] == round(7 / 3, 1)
    assert s["length_ratio"] == round(7 / 10, 3)
    assert corpus_scores([], []) == {}
    with pytest.raises(ValueError):
        corpus_scores(["a"], [])


def test_length_stats_median_and_p90():
    s = length_stats(["w " * n for n in range(1, 11)], ["w"] * 10)
    assert s["median_words"] == 5.5 and s["p90_words"] == 10 and s["ref_mean_words"] == 1.0


def test_json_check():
    assert run_check("json", "", '{"a": 1}') is True
    assert run_check("json", "", '```json\n{"a": [1, 2]}\n```') is True
    assert run_check("json", "", "{'a': 1}") is False
    assert run_check("json", "", "Sure! {\"a\": 1}") is False


def test_mentions_check_reads_the_prompt():
    prompt = "Write a description.\nTitle: Trail Shoe\nBrand: Acme Outdoor\nFeatures: grip"
    check = "mentions:Brand: (.+)"
    assert run_check(check, prompt, "The acme outdoor trail shoe grips.") is True
    assert run_check(check, prompt, "A trail shoe that grips.") is False
    assert run_check(check, "no brand line here", "whatever") is None    # does not apply


def test_check_rates_count_only_where_a_check_applies():
    prompts = ["Brand: Acme", "Brand: Zeta", "no brand"]
    rates = check_rates(["mentions:Brand: (.+)", "json"], prompts, ["Acme rocks", "nothing", "{}"])
    assert rates["mentions:Brand: (.+)"] == {"rate": 0.5, "passed": 1, "applied": 2}
    assert rates["json"] == {"rate": round(1 / 3, 3), "passed": 1, "applied": 3}


@pytest.mark.parametrize("check,message", [("jsonn", "unknown check 'jsonn'"), ("mentions:Brand: .+", "needs a group"),
                                           ("mentions:(unclosed", "bad regex")])
def test_bad_checks_fail_with_the_check_named(check, message):
    with pytest.raises(WebtuneError, match=message) as err:
        validate_check(check, where="template t, task x, checks")
    assert "template t, task x" in str(err.value)
