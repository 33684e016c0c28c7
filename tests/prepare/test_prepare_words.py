"""The batched word statistics behind the word filters and dedupe."""
import pytest

from webtune.textsig.words import analyse


def test_tokens_symbols_and_normalised_words():
    texts = ["Hello, world! $$$ -- # ok...", "", "a  b\nc", "x"]
    w = analyse(texts)
    assert w.tokens.tolist() == [len(t.split()) for t in texts]
    assert w.symbols.tolist() == [5, 0, 0, 0]  # tokens "$$$" "--" "#", plus the "#" and the "..." (Gopher)
    assert w.counts.tolist() == [3, 0, 3, 1]  # hello world ok; "$$$" and the like vanish
    h = analyse(["HELLO world", "hello, World."]).hashes
    assert h[0] == h[2] and h[1] == h[3]


def test_top_ngram_share_matches_gophers_definition():
    texts = ["a b c d e a b", "lorem ipsum " * 30, "one two three four"]
    share = analyse(texts).top_ngram_share(2)
    assert share[0] == pytest.approx(2 * 2 / 7)          # "a b" twice: 4 of 7 word chars
    assert share[1] == pytest.approx(1.0) and share[2] == 0.0
    assert analyse(["x y z x y z x y z"]).top_ngram_share(3)[0] == pytest.approx(1.0)
