"""`webtune preview` on the default's records says what the targets state that their prompts do not."""
from __future__ import annotations

from webtune.preview import preview


def test_preview_counts_unsupported_targets_and_gives_advice(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # the source snapshot goes to ./runs/.cache
    preview(["model=openai_gpt4o_mini", "n=6", "seed=3"])
    out = " ".join(capsys.readouterr().out.split())
    assert "grounding (prepare.grounding=trim, vocabulary from the 120 records read):" in out
    assert "mention a value no prompt field holds ('N-year warranty'): add the field to the prompt template, " \
           "or leave them trimmed" in out
    assert "prepare.grounding=trim keeps" in out          # a shown example's own line

