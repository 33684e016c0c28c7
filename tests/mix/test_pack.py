import numpy as np
import pytest

from webtune.mix.pack import apply_overflow, efficiency, pack_examples, plan_bfd


def lognormal_lengths(n, cap, seed=0):
    """Chat-like lengths, as bench/gen/gen_lengths.py draws them (median ~300 tokens)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(5.7, 0.9, n).astype(np.int64), 16, cap)


def check_plan(lengths, bins, cap):
    every = np.concatenate(bins)
    assert np.array_equal(np.sort(every), np.arange(len(lengths)))   # each index exactly once
    assert max(int(lengths[b].sum()) for b in bins) <= cap            # no bin over capacity


@pytest.mark.parametrize("seed", range(5))
def test_plan_is_a_partition_within_capacity(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 101, size=rng.integers(1, 400))
    bins = plan_bfd(lengths, 100)
    check_plan(lengths, bins, 100)
    # never worse than the trivial bound: at most twice the optimum's lower bound, plus one
    assert len(bins) <= 2 * -(-lengths.sum() // 100) + 1


def test_bfd_is_best_fit():
    # 6 opens a bin (4 left), 5 opens another (5 left); 4 must go to the tightest fit (the 6's bin)
    bins = plan_bfd(np.array([4, 5, 6]), 10)
    assert [sorted(b.tolist()) for b in bins] == [[0, 2], [1]]


def test_exact_fits_fill_every_bin():
    lengths = np.array([3, 7, 5, 5, 2, 8, 10, 1, 9])
    bins = plan_bfd(lengths, 10)
    assert len(bins) == 5
    assert efficiency(lengths, bins, 10) == 1.0


def test_efficiency_on_a_realistic_sample():
    cap = 2048
    lengths = lognormal_lengths(200_000, cap)
    bins = plan_bfd(lengths, cap)
    check_plan(lengths, bins, cap)
    assert efficiency(lengths, bins, cap) >= 0.999
    lower_bound = -(-int(lengths.sum()) // cap)
    assert len(bins) <= lower_bound * 1.001


def test_plan_rejects_lengths_outside_capacity():
    with pytest.raises(ValueError, match="example 1 has 11 tokens"):
        plan_bfd(np.array([3, 11, 2]), 10)
    with pytest.raises(ValueError, match="example 0 has 0 tokens"):
        plan_bfd(np.array([0, 2]), 10)
    assert plan_bfd(np.array([], dtype=np.int64), 10) == []


def test_overflow_truncate():
    ov = apply_overflow(np.array([5, 25, 10]), 10, "truncate")
    assert ov.example.tolist() == [0, 1, 2] and ov.length.tolist() == [5, 10, 10]
    assert ov.tokens_lost == 15
    assert list(ov.fates()) == [(1, "repaired", "truncated", "25 tokens cut to max_seq_len 10, 15 lost")]


def test_overflow_drop():
    ov = apply_overflow(np.array([5, 25, 10, 11]), 10, "drop")
    assert ov.example.tolist() == [0, 2] and ov.length.tolist() == [5, 10]
    fates = list(ov.fates())
    assert [(i, s, r) for i, s, r, _ in fates] == [(1, "rejected", "too_long"), (3, "rejected", "too_long")]
    assert "25 tokens > max_seq_len 10" in fates[0][3]


def test_overflow_split_covers_every_token_once():
    lengths = np.array([5, 25, 10, 21])
    ov = apply_overflow(lengths, 10, "split")
    assert ov.example.tolist() == [0, 1, 1, 1, 2, 3, 3, 3]
    assert ov.start.tolist() == [0, 0, 10, 20, 0, 0, 10, 20]
    assert ov.length.tolist() == [5, 10, 10, 5, 10, 10, 10, 1]
    assert ov.tokens_lost == 0
    assert [f[:3] for f in ov.fates()] == [(1, "repaired", "split"), (3, "repaired", "split")]


def test_overflow_rejects_unknown_policy_and_empty_examples():
    with pytest.raises(ValueError, match="unknown overflow policy 'wrap'.*truncate, drop, split"):
        apply_overflow(np.array([3]), 10, "wrap")
    with pytest.raises(ValueError, match="example 1 has no tokens"):
        apply_overflow(np.array([3, 0]), 10, "drop")


def make_examples(lengths):
    out = []
    for i, n in enumerate(lengths):
        ids = [i * 100_000 + j for j in range(n)]  # token values say which example and position
        out.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    return out


@pytest.mark.parametrize("policy", ["truncate", "drop", "split"])
def test_pack_examples_keeps_tokens_and_labels_together(policy):
    lengths = lognormal_lengths(300, 512, seed=3) // 4 + 1
    lengths[:3] = [700, 513, 1100]  # over-length ones
    examples = make_examples(lengths)
    packed = pack_examples(examples, 512, policy)
    seen = {}
    for row in packed.rows:
        assert sum(len(ex["input_ids"]) for ex in row) <= 512
        for ex in row:
            first = ex["input_ids"][0]
            i, start = divmod(first, 100_000)
            src = examples[i]
            n = len(ex["input_ids"])
            assert ex["input_ids"] == src["input_ids"][start:start + n]
            assert ex["labels"] == src["labels"][start:start + n]
            seen.setdefault(i, []).append((start, n))
    if policy == "truncate":
        assert seen[0] == [(0, 512)] and len(seen) == len(examples)
    elif policy == "drop":
        assert set(seen) == set(range(3, len(examples)))
    else:
        assert sorted(seen[2]) == [(0, 512), (512, 512), (1024, 76)]
        assert all(sum(n for _, n in seen[i]) == lengths[i] for i in seen)
    s = packed.stats()
    assert s["over_length"] == 3 and s["rows"] == len(packed.rows)
    assert s["efficiency"] == pytest.approx(s["tokens"] / (s["rows"] * 512))


def test_pack_examples_counts_pieces_without_loss():
    # a 12-token example whose first 9 labels are masked: split at 4, pieces 0 and 1 teach nothing
    ex = {"input_ids": list(range(12)), "labels": [-100] * 9 + [9, 10, 11]}
    assert pack_examples([ex], 4, "split").stats()["pieces_without_loss"] == 2
    assert pack_examples([ex], 12, "split").stats()["pieces_without_loss"] == 0


def test_pack_examples_names_a_mismatched_example():
    with pytest.raises(ValueError, match="example 1: input_ids has 3 tokens but labels has 2"):
        pack_examples([{"input_ids": [1], "labels": [1]}, {"input_ids": [1, 2, 3], "labels": [1, 2]}], 8)
