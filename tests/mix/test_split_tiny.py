"""A tiny source's split: a minimum test set when no group drew it, and a training split with a domain
example when the only other group drew validation (the flaky 2-record marketplace sample of CI)."""
from webtune.mix.split import assign, require_domain_test, require_domain_train


def group_drawing(split: str, seed: int = 0) -> str:
    return next(g for g in (f"g{k}" for k in range(10_000)) if assign(g, seed, 0.1, 0.1) == split)


def example(group: str) -> dict:
    return {"id": f"{group}/t", "record_id": group, "group": group, "side": "domain"}


def test_two_records_one_drawn_to_test_one_to_validation_still_train():
    test_group, val_group = group_drawing("test"), group_drawing("val")
    examples = [example(test_group), example(val_group)]
    splits = {"train": [], "val": [examples[1]], "test": [examples[0]]}
    said = []
    require_domain_test(splits, examples, 0.1, 0, log=said.append)
    require_domain_train(splits, log=said.append)
    assert [ex["group"] for ex in splits["train"]] == [val_group] and splits["val"] == []
    assert [ex["group"] for ex in splits["test"]] == [test_group] and "drew the training split" in said[-1]


def test_two_records_in_train_and_validation_give_one_to_test_and_keep_one_to_train():
    train_group, val_group = group_drawing("train"), group_drawing("val")
    examples = [example(train_group), example(val_group)]
    splits = {"train": [examples[0]], "val": [examples[1]], "test": []}
    require_domain_test(splits, examples, 0.1, 0, log=lambda _: None)
    require_domain_train(splits, log=lambda _: None)
    assert len(splits["test"]) == 1 and len(splits["train"]) == 1
    assert {ex["group"] for s in splits.values() for ex in s} == {train_group, val_group}


def test_a_training_split_with_a_domain_example_is_left_alone():
    groups = [group_drawing("train"), group_drawing("val")]
    splits = {"train": [example(groups[0])], "val": [example(groups[1])], "test": []}
    require_domain_train(splits, log=lambda _: None)
    assert len(splits["val"]) == 1
