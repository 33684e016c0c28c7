"""The OpenAI cookbook's chat-format checks, token counts and cost estimate, on real JSONL files."""
import json
import math
from pathlib import Path

import pytest

from webtune.chat import cookbook as chat_format
from webtune.chat.cookbook import check_example, check_examples, count_tokens, estimate_cost

SYSTEM = "You write short, accurate product descriptions for an online shop."
PRODUCTS = [
    ("Anker PowerCore 10000", "Anker", ["10000mAh", "USB-C input", "weighs 180 g"]),
    ("Logitech MX Master 3S", "Logitech", ["8000 DPI sensor", "quiet clicks", "USB-C charging"]),
    ("Sony WH-1000XM5", "Sony", ["noise cancelling", "30-hour battery", "multipoint Bluetooth"]),
    ("Kindle Paperwhite", "Amazon", ["6.8-inch display", "waterproof IPX8", "adjustable warm light"]),
    ("Hydro Flask 32 oz", "Hydro Flask", ["double-wall vacuum insulation", "keeps cold 24 hours"]),
    ("Instant Pot Duo 7-in-1", "Instant Pot", ["6-quart", "pressure cooker", "slow cooker", "rice cooker"]),
    ("Crocs Classic Clog", "Crocs", ["Croslite foam", "ventilation ports", "pivoting heel strap"]),
    ("Lodge Cast Iron Skillet 10.25 in", "Lodge", ["pre-seasoned", "oven safe", "made in USA"]),
    ("Fire TV Stick 4K", "Amazon", ["Dolby Vision", "Wi-Fi 6", "Alexa voice remote"]),
    ("Samsung EVO Select 256GB", "Samsung", ["microSDXC", "130 MB/s read", "U3 A2 V30"]),
    ("Café Élégance Espresso Cups", "Maison Café", ["porcelain", "set of 4", "80 ml — dishwasher safe"]),
    ("Bose SoundLink Flex", "Bose", ["IP67 waterproof", "12-hour battery", "PositionIQ"]),
]


def product_example(title: str, brand: str, features: list[str]) -> dict:
    """What prepare renders for the product_description task: system, user, assistant."""
    user = f"Write a product description.\nTitle: {title}\nBrand: {brand}\nFeatures:\n" + \
        "\n".join(f"- {f}" for f in features)
    assistant = f"The {title} from {brand} offers {', '.join(features[:-1]) + ' and ' + features[-1] if len(features) > 1 else features[0]}."
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def good_rows():
    return [product_example(*p) for p in PRODUCTS]


def test_real_example_set_passes_every_check(tmp_path, good_rows):
    report = check_examples(write_jsonl(tmp_path / "train.jsonl", good_rows))
    assert report.ok, report.first_error()
    assert report.errors == [] and report.warnings == []
    assert report.n_examples == len(PRODUCTS)
    assert report.messages_per_example == [3] * len(PRODUCTS)
    assert all(t > 30 for t in report.tokens_per_example)
    assert all(0 < a < t for a, t in zip(report.assistant_tokens_per_example, report.tokens_per_example))
    # tiktoken's encoding file cannot be fetched here: the approximation is used and says so
    assert not report.exact_tokens and report.token_method.startswith("approximation")
    stats = report.stats()["tokens_per_example"]
    assert stats["min"] <= stats["p10"] <= stats["median"] <= stats["p90"] <= stats["max"]


BAD_EXAMPLES = [
    # (the bad line, error kind, field the problem names)
    (["not", "an", "object"], "data_type", "(example)"),
    ({"msgs": []}, "missing_messages_list", "messages"),
    ({"messages": []}, "missing_messages_list", "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}, "message_missing_key", "messages[1].content"),
    ({"messages": [{"role": "user", "content": "hi", "lang": "en"}, {"role": "assistant", "content": "yo"}]},
     "message_unrecognized_key", "messages[0].lang"),
    ({"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     "unrecognized_role", "messages[0].role"),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "yo"}]},
     "missing_content", "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ["parts"]}]},
     "missing_content", "messages[1].content"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
     "example_missing_assistant_message", "messages"),
]


@pytest.mark.parametrize("bad,kind,field", BAD_EXAMPLES, ids=[f"{k}-{i}" for i, (_, k, _) in enumerate(BAD_EXAMPLES)])
def test_each_cookbook_error_names_line_and_field(tmp_path, good_rows, bad, kind, field):
    rows = good_rows[:5] + [bad] + good_rows[5:]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    report = check_examples(path)
    assert not report.ok
    assert [(p.kind, p.line, p.field) for p in report.errors] == [(kind, 6, field)]
    line = report.first_error()
    assert "\n" not in line and str(path) in line and "line 6" in line and field in line


def test_unparsable_and_blank_lines_are_errors_with_their_line(tmp_path, good_rows):
    path = tmp_path / "train.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in good_rows[:10])
    path.write_text(text + '{"messages": [\n' + "\n")
    report = check_examples(path)
    assert [(p.kind, p.line) for p in report.errors] == [("data_type", 11), ("data_type", 12)]
    assert "not valid JSON" in report.errors[0].message
    assert "and 1 more problem" in report.first_error()


def test_fewer_than_ten_examples_is_an_error(tmp_path, good_rows):
    report = check_examples(write_jsonl(tmp_path / "train.jsonl", good_rows[:9]))
    assert [p.kind for p in report.errors] == ["too_few_examples"]
    assert "9 examples" in report.errors[0].message
    # validation files may be small
    assert check_examples(write_jsonl(tmp_path / "val.jsonl", good_rows[:2]), min_examples=1).ok


def test_warnings_missing_system_and_too_long(tmp_path, good_rows):
    rows = [dict(r) for r in good_rows]
    rows[2] = {"messages": rows[2]["messages"][1:]}                  # no system message
    rows[4] = {"messages": rows[4]["messages"][:1] + [{"role": "assistant", "content": "x" * 4000}]}  # no user, long
    report = check_examples(write_jsonl(tmp_path / "train.jsonl", rows), max_tokens_per_example=500)
    assert report.ok  # warnings do not stop a run
    kinds = {(w.kind, w.line) for w in report.warnings}
    assert ("too_long", 5) in kinds and ("missing_user_message", 5) in kinds
    assert ("missing_system_message", 0) in kinds and report.n_missing_system == 1
    assert report.n_too_long == 1
    # billing caps each example at the limit
    assert report.billed_tokens_per_epoch() == sum(min(500, t) for t in report.tokens_per_example)
    assert report.billed_tokens_per_epoch() < sum(report.tokens_per_example)


def test_missing_file_is_reported_not_raised(tmp_path):
    report = check_examples(tmp_path / "nope.jsonl")
    assert [p.kind for p in report.errors] == ["missing_file"]


def test_approximate_token_count_follows_the_cookbook_overheads():
    messages = [{"role": "user", "content": "abcdefgh"}, {"role": "assistant", "content": "é", "name": "bot"}]
    # 3 per example + per message 3 + role + content (+1 for name): UTF-8 bytes / 4, rounded up
    expected = 3 + (3 + 1 + 2) + (3 + math.ceil(9 / 4) + 1 + 1 + 1)
    assert count_tokens(messages) == expected
    assert chat_format.count_assistant_tokens(messages) == 1


def test_check_example_accepts_a_good_example_and_weight():
    ex = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo", "weight": 0},
                       {"role": "assistant", "content": "hello", "weight": 1}]}
    assert check_example(ex, 1) == []


def test_estimate_cost_epochs_and_price(tmp_path, good_rows):
    report = check_examples(write_jsonl(tmp_path / "train.jsonl", good_rows))
    per_epoch = sum(report.tokens_per_example)
    auto = estimate_cost(report, "auto", 0.003)
    # cookbook: 12 examples x 3 < 100, so auto picks min(25, 100 // 12) = 8 epochs
    assert auto.n_epochs == 8
    assert auto.billed_tokens == per_epoch * 8
    assert auto.cost_usd == pytest.approx(per_epoch * 8 / 1000 * 0.003)
    fixed = estimate_cost(report, 2, None)
    assert fixed.n_epochs == 2 and fixed.cost_usd is None and "price unknown" in str(fixed)
    assert "token count approximation" in str(auto)
    assert chat_format.resolve_epochs("auto", 50) == 3
    assert chat_format.resolve_epochs("auto", 20000) == 1
