import numpy as np
import pytest

from webtune.mix.pack import efficiency, plan_bfd


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
