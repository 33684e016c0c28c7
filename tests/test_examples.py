"""The embedded default's bundled data (examples/) and the toy test fixture model are what they claim to be."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from collections import Counter
from pathlib import Path

import ftfy
import pytest

from webtune.paths import SHIPPED

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = SHIPPED / "examples"
BASE_MODEL = ROOT / "tests" / "fixtures" / "tiny_model"   # the toy test fixture (scripts/pretrain_base.py)


def shingles(text: str, n: int = 5) -> set:
    words = text.lower().split()
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def products() -> list:
    return json.loads((EXAMPLES / "products.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def labels() -> list[dict]:
    return read_jsonl(EXAMPLES / "products.labels.jsonl")


@pytest.fixture(scope="module")
def make_examples():
    spec = importlib.util.spec_from_file_location("make_examples", ROOT / "scripts" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- products -------------------------------------------------------------------------------------

def test_products_has_the_planted_cases(products, labels):
    assert 380 <= len(products) <= 420
    kinds = Counter(lab["kind"] for lab in labels)
    assert kinds == {"exact_duplicate": 12, "near_duplicate": 12, "malformed": 8, "error_record": 2}
    assert len({lab["index"] for lab in labels}) == len(labels)


def test_exact_duplicates_equal_an_earlier_original(products, labels):
    for lab in labels:
        if lab["kind"] == "exact_duplicate":
            assert lab["of"] < lab["index"]
            assert products[lab["index"]] == products[lab["of"]]


def test_near_duplicates_are_close_but_not_equal(products, labels):
    for lab in labels:
        if lab["kind"] == "near_duplicate":
            dup, orig = products[lab["index"]], products[lab["of"]]
            assert lab["of"] < lab["index"]
            assert dup["description"] != orig["description"]
            assert jaccard(dup["description"], orig["description"]) >= 0.8
            assert jaccard(dup["title"] + " " + dup["description"], orig["title"] + " " + orig["description"]) >= 0.8


def test_error_records_look_like_bright_data_errors(products, labels):
    for lab in labels:
        if lab["kind"] == "error_record":
            rec = products[lab["index"]]
            assert set(rec) == {"timestamp", "input", "error", "error_code"}
            assert rec["error_code"] == "dead_page" and rec["error"]
            assert rec["input"]["url"].startswith("https://www.amazon.com/dp/")


def test_malformed_records_carry_the_labelled_defect(products, labels):
    malformed = {lab["defect"]: lab for lab in labels if lab["kind"] == "malformed"}
    assert set(malformed) == {"missing_title", "null_description", "description_object", "price_na_rating_text",
                              "html_in_description", "mojibake", "bare_string", "blank_description"}
    rec = lambda defect: products[malformed[defect]["index"]]  # noqa: E731
    assert "title" not in rec("missing_title")
    assert rec("null_description")["description"] is None
    assert isinstance(rec("description_object")["description"], dict)
    priced = rec("price_na_rating_text")
    assert priced["final_price"] == "N/A" and priced["rating"] == "4.5 out of 5 stars"
    html = rec("html_in_description")["description"]
    assert "<p>" in html and "</div>" in html
    assert malformed["html_in_description"]["repaired"]["description"] in html.replace("</p><p>", " ").replace(
        "<b>", "").replace("</b>", "").replace("&amp;", "&")
    broken = rec("mojibake")["description"]
    assert "Ã©" in broken
    assert ftfy.fix_text(broken) == malformed["mojibake"]["repaired"]["description"]
    assert isinstance(rec("bare_string"), str)
    assert rec("blank_description")["description"].strip() == ""


def test_clean_records_have_the_snapshot_shape_and_readable_descriptions(products, labels):
    planted = {lab["index"] for lab in labels}
    clean = [r for i, r in enumerate(products) if i not in planted]
    assert len(clean) >= 350
    categories = set()
    for r in clean:
        assert {"url", "asin", "title", "brand", "description", "features", "initial_price", "final_price",
                "currency", "rating", "reviews_count", "categories", "availability", "seller_name", "images",
                "timestamp", "input"} <= set(r)
        assert isinstance(r["features"], list) and len(r["features"]) >= 3
        assert isinstance(r["final_price"], float) and 1 <= r["rating"] <= 5
        assert r["input"]["url"].endswith(r["asin"]) and r["url"].endswith("/dp/" + r["asin"])
        words = r["description"].split()
        assert 40 <= len(words) <= 90, r["title"]
        assert 2 <= r["description"].count(". ") + 1 <= 6
        assert r["brand"] in r["description"]
        noun_head = r["title"].split(",")[0].split()[-1].lower()  # "... French Press" -> "press"
        assert noun_head in r["description"].lower(), r["title"]
        categories.add(r["categories"][1])
    assert len(categories) >= 10


def test_no_unplanted_near_duplicates(products, labels):
    planted = {lab["index"] for lab in labels}
    texts = [shingles(r["description"]) for i, r in enumerate(products) if i not in planted]
    worst = max(len(a & b) / len(a | b) for i, a in enumerate(texts) for b in texts[i + 1:])
    assert worst < 0.5


def test_generator_is_deterministic(make_examples, products, labels):
    make_examples.check_grammar()
    records, new_labels = make_examples.make_products(random.Random(make_examples.SEED))
    assert records == products
    assert json.loads(json.dumps(new_labels)) == labels


# ---- general chat set -----------------------------------------------------------------------------

def test_general_set_is_large_unique_and_split_cleanly(make_examples):
    train = read_jsonl(EXAMPLES / "general" / "train.jsonl")
    test = read_jsonl(EXAMPLES / "general" / "test.jsonl")
    for row in train + test:
        assert list(row) == ["messages"]
        user, assistant = row["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        assert set(user) == set(assistant) == {"role", "content"}
        assert user["content"].strip() and assistant["content"].strip()
    pairs = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in train + test]
    assert len(set(pairs)) == len(pairs) >= 300
    train_q = {r["messages"][0]["content"].lower() for r in train}
    test_q = {r["messages"][0]["content"].lower() for r in test}
    assert not train_q & test_q
    assert 50 <= len(test) <= 70
    handwritten = make_examples.handwritten_pairs(EXAMPLES / "general" / "handwritten.txt")
    assert len(handwritten) >= 150


# ---- tokenizer and base model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(BASE_MODEL)


@pytest.mark.parametrize("text", ["Why is the sky blue?", "Café crème, 12345 items\n\n  indented\ttab",
                                  "Ünïcödé — “quotes” and emoji 🙂", ""])
def test_tokenizer_round_trips_text(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids[0] == tokenizer.bos_token_id  # like Llama 3, plain encode() starts with <|begin_of_text|>
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.bos_token == "<|begin_of_text|>"
    assert tokenizer.eos_token == "<|eot_id|>"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    for token in ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
    assert 2000 <= len(tokenizer) <= 5000


def test_chat_template_masks_exactly_assistant_content_and_eot(tokenizer):
    chat = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "What is 2 plus 2?"},
            {"role": "assistant", "content": "2 plus 2 equals 4."},
            {"role": "user", "content": "And the capital of France?"},
            {"role": "assistant", "content": "The capital of France is Paris."}]
    enc = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert len(ids) == len(mask)
    # Each run of masked tokens is one assistant message followed by <|eot_id|>, nothing more.
    runs, current = [], []
    for token, m in zip(ids, mask):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    assert [tokenizer.decode(r) for r in runs] == ["2 plus 2 equals 4.<|eot_id|>",
                                                   "The capital of France is Paris.<|eot_id|>"]
    unmasked = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    assert "You answer briefly." in unmasked and "And the capital of France?" in unmasked
    assert "Paris" not in unmasked


def test_chat_template_generation_prompt_and_roles(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
    with pytest.raises(Exception, match="Unknown role"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "Hi"}], tokenize=False)


def test_base_model_loads_like_a_hub_model_and_has_learned(tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(BASE_MODEL)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert (BASE_MODEL / "model.safetensors").stat().st_size < 12.5e6
    def assistant_loss(chat):
        enc = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True,
                                            return_tensors="pt")
        labels = torch.where(enc["assistant_masks"] == 1, enc["input_ids"], -100)
        with torch.no_grad():
            return model(input_ids=enc["input_ids"], labels=labels).loss.item()

    held_out = assistant_loss(read_jsonl(EXAMPLES / "general" / "test.jsonl")[0]["messages"])
    seen = assistant_loss(read_jsonl(EXAMPLES / "general" / "train.jsonl")[0]["messages"])
    assert math.isfinite(held_out) and held_out > 0
    assert seen < math.log(len(tokenizer)) - 2  # far below a uniform guess: it was pretrained
