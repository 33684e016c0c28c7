"""Exact and near-duplicate detection: normalisation, banding, deterministic keeper."""
from types import SimpleNamespace

import numpy as np
import pytest

from webtune.textsig.dedupe import Signer, find_duplicates, lsh_params, word_hashes

from .conftest import words


def signer(**kw):
    cfg = dict(exact=True, near=True, shingle=5, num_perm=128, threshold=0.8, engine="rensa")
    cfg.update(kw)
    return Signer(SimpleNamespace(**cfg))


def dedupe(texts, **kw):
    s = signer(**kw)
    exact, bands, empty = s.sign(texts)
    return find_duplicates(exact, bands, empty, s.exact, s.near)


def near_copy(text: str, every: int = 40) -> str:
    ws = text.split()
    for i in range(0, len(ws), every):
        ws[i] = "zzzq"
    return " ".join(ws)


def test_word_hashes_normalise_case_punctuation_and_spaces():
    h, counts = word_hashes(["Hello, World!", "", "hello   world", "world hello"])
    assert counts.tolist() == [2, 0, 2, 2]
    assert h[0] == h[2] and h[1] == h[3] and h[0] != h[1]


def test_lsh_params_catch_pairs_at_the_threshold():
    assert lsh_params(128, 0.8) == (16, 8)
    bands, rows = lsh_params(256, 0.9)
    assert 1 - (1 - 0.9 ** rows) ** bands >= 0.9 and bands * rows <= 256


@pytest.mark.parametrize("engine", ["rensa", "datasketch"])
def test_exact_and_near_duplicates_keep_the_first(engine):
    a, b, c = words(1, 200), words(2, 200), words(3, 200)
    texts = [a, b, a.upper(), near_copy(b), c, "", ""]
    keeper, first_copy = dedupe(texts, engine=engine)
    assert keeper.tolist() == [0, 1, 0, 1, 4, 5, 6]  # empty texts are never duplicates
    assert first_copy.tolist() == [0, 1, 0, 3, 4, 5, 6]  # 2 is an exact copy; 3 only near


def test_dissimilar_texts_are_kept():
    texts = [words(i, 80) for i in range(300)]
    keeper, _ = dedupe(texts)
    assert (keeper == np.arange(300)).all()


def test_transitive_groups_keep_the_earliest():
    a = words(7, 300)
    chain = [near_copy(a, 60), a, near_copy(a, 50)]
    keeper, _ = dedupe(chain)
    assert keeper.tolist() == [0, 0, 0]


def test_near_off_leaves_near_copies_and_exact_off_leaves_copies_to_near():
    a = words(9, 200)
    assert dedupe([a, near_copy(a), a], near=False)[0].tolist() == [0, 1, 0]
    assert dedupe([a, near_copy(a), a], exact=False)[0].tolist() == [0, 0, 0]
