"""VTT and SRT transcripts as a files source: rolling captions merged, windows, broken files."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from webtune.config import FilesConfig
from webtune.records import Record, Rejection
from webtune.prose import ends_sentence
from webtune.sources import files
from webtune.sources import transcripts as tr

GEN_PAGES = Path(__file__).resolve().parents[2] / "bench/gen/gen_pages.py"
pytestmark = pytest.mark.skipif(not GEN_PAGES.exists(), reason=f"{GEN_PAGES} not found")


def gen(kind, n, out, seed=0):
    subprocess.run([sys.executable, str(GEN_PAGES), kind, "--n", str(n), "--seed", str(seed), "--out", str(out)],
                   check=True)
    return {m["file"]: m for m in map(json.loads, open(out / "MANIFEST.jsonl"))}


def read(folder, pattern, **kw):
    cfg = OmegaConf.structured(FilesConfig(paths=[str(folder / pattern)], **kw))
    return cfg, files.resolve(cfg), list(files.iter_records(cfg, "talks", files.resolve(cfg)))


def spoken_lines(vtt: str) -> list[str]:
    """What the speaker said, from the generator's timed lines (the ones with <c> word tags)."""
    return [" ".join(re.sub(r"<[^>]*>", "", ln).split()) for ln in vtt.splitlines() if "<c>" in ln]


@pytest.fixture(scope="module")
def vtts(tmp_path_factory):
    out = tmp_path_factory.mktemp("vtt")
    return out, gen("vtt", 12, out)


def test_rolling_auto_captions_are_merged_into_what_was_said(vtts):
    folder, manifest = vtts
    _, _, got = read(folder, "*.vtt")
    assert len(got) == len(manifest) == 12
    for rec in got:
        assert isinstance(rec, Record) and rec.id.endswith("#1")
        said = spoken_lines((folder / rec.fields["file"]).read_text())
        assert [s["text"] for s in rec.fields["segments"]] == said  # each line once, in order, no tags
        assert rec.fields["text"] == " ".join(said)
        assert rec.fields["text"].startswith(manifest[rec.fields["file"]]["first_sentence"])
        starts = [s["start"] for s in rec.fields["segments"]]
        assert starts == sorted(starts) and all(s["end"] > s["start"] for s in rec.fields["segments"])
        assert rec.fields["title"] == rec.fields["file"][:-4].replace("_", " ")
        assert rec.group == f"talks:{rec.fields['file']}"


def test_long_transcripts_are_cut_into_windows_sharing_one_group(vtts):
    folder, _ = vtts
    _, _, whole = read(folder, "*.vtt")
    _, _, windows = read(folder, "*.vtt", window_seconds=60)
    assert len(windows) > len(whole)
    for rec in whole:
        parts = [w for w in windows if w.group == rec.group]
        assert [w.id for w in parts] == [rec.id[:-2] + f"#{n}" for n in range(1, len(parts) + 1)]
        assert [s for w in parts for s in w.fields["segments"]] == rec.fields["segments"]  # nothing lost
        assert " ".join(w.fields["text"] for w in parts) == rec.fields["text"]
        for w, after in zip(parts, parts[1:] + [None]):
            segs = w.fields["segments"]
            assert segs[-1]["start"] - segs[0]["start"] < 60 * (1 + tr.WINDOW_SLACK)
            assert w.fields["windows"] == len(parts) and w.fields["time_range"]
            if after is not None:  # a window ends with a sentence, or runs out of slack at a cue
                span = after.fields["segments"][0]["start"] - segs[0]["start"]
                assert ends_sentence(segs[-1]["text"], strict=True) or span >= 60 * (1 + tr.WINDOW_SLACK)


def test_srt_segments_and_broken_timestamps(tmp_path):
    manifest = gen("srt", 60, tmp_path, seed=1)
    _, _, got = read(tmp_path, "*.srt")
    assert len(got) == 60
    broken = {f for f, m in manifest.items() if m["kind"] == "broken:timestamp"}
    assert broken, "the generator should make a few broken files"
    for item in got:
        name = item.id.split(":", 1)[1].split("#")[0]
        if name in broken:
            assert isinstance(item, Rejection) and item.reason == "broken_timestamps"
            assert name in item.detail and "line 10:" in item.detail and "00:00:xx,000" in item.detail
        else:
            assert isinstance(item, Record)
            lines = (tmp_path / name).read_text().split("\n\n")
            assert len(item.fields["segments"]) == len([b for b in lines if b.strip()])
            assert item.fields["text"].startswith(manifest[name]["first_sentence"])


@pytest.mark.parametrize("name,data,reason", [
    ("empty.vtt", b"", "empty_file"),
    ("garbage.vtt", b"this is not a transcript\n", "malformed_transcript"),
    ("latin.srt", b"1\n00:00:01,000 --> 00:00:02,000\nCaf\xe9\n", "invalid_utf8"),
    ("backwards.vtt", b"WEBVTT\n\n00:00:05.000 --> 00:00:01.000\nhello\n", "broken_timestamps"),
    ("nocaptions.vtt", b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\n\n", "no_captions"),
])
def test_bad_transcripts_are_rejections(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    _, _, got = read(tmp_path, name)
    assert [(x.id, x.reason) for x in got] == [(f"talks:{name}#1", reason)]
    assert name in got[0].detail


def test_srt_with_crlf_and_tags(tmp_path):
    (tmp_path / "a.srt").write_bytes(b"1\r\n00:00:01,500 --> 00:00:03,250\r\n<i>Hello</i> there\r\n\r\n"
                                     b"2\r\n00:00:03,250 --> 00:00:04,000\r\nGeneral Kenobi\r\n")
    _, _, [rec] = read(tmp_path, "a.srt")
    assert rec.fields["segments"] == [{"start": 1.5, "end": 3.25, "text": "Hello there"},
                                      {"start": 3.25, "end": 4.0, "text": "General Kenobi"}]


def test_transcript_shards_split_by_file(vtts):
    folder, _ = vtts
    cfg, paths, whole = read(folder, "*.vtt", window_seconds=60)
    parts = [list(files.iter_records(cfg, "talks", paths, s, 2)) for s in range(2)]
    assert sorted(x.id for p in parts for x in p) == sorted(x.id for x in whole)
    for p in parts:  # all windows of a transcript stay in one shard
        groups = {x.group for x in p}
        assert not groups & {x.group for q in parts if q is not p for x in q}


def test_transcript_summary_template_renders_windows_and_youtube_records(vtts):
    from tests.sources.test_html import rendered

    folder, _ = vtts
    _, _, windows = read(folder, "*.vtt", window_seconds=60)
    w = next(x for x in windows if x.fields["windows"] > 1 and x.fields["window"] == 2)
    got = rendered("transcript_summary", w.fields)
    assert got["transcript_passage"][1]["content"] == f"What is said in “{w.fields['title']}” from {w.fields['time_range']}?"
    assert got["transcript_passage"][2]["content"] == w.fields["text"]
    assert got["transcript_title"][2]["content"] == w.fields["title"]
    assert got["video_summary"] == "missing_field"  # a VTT window has no transcript/description
    youtube = {"title": "Intro to packing", "transcript": "so today we talk about packing " * 10,
               "description": "A short video on packing sequences for training language models."}
    got = rendered("transcript_summary", youtube)
    assert got["video_summary"][2]["content"] == youtube["description"]
    assert got["transcript_passage"] == "missing_field"


def test_windows_end_where_a_sentence_ends_not_at_the_clock(tmp_path):
    lines = ["We start with the plan", "and keep going", "until this ends.", "Then a second idea",
             "runs on", "for quite a while", "and finally stops.", "A third one begins", "and ends.",
             "no punctuation from here on", "just words", "and words", "and more words", "still more",
             "and yet more words", "the last cue"]
    cues = "".join(f"{i // 6:02d}:{i * 10 % 60:02d}.000 --> {(i * 10 + 9) // 60:02d}:{(i * 10 + 9) % 60:02d}.000\n{t}\n\n"
                   for i, t in enumerate(lines))
    (tmp_path / "talk.vtt").write_text("WEBVTT\n\n" + cues)
    _, _, got = read(tmp_path, "*.vtt", window_seconds=45)
    texts = [w.fields["text"] for w in got]
    # the clock alone would cut after 50 s, inside "Then a second idea runs on | for quite a while"
    assert texts[0] == "We start with the plan and keep going until this ends. Then a second idea runs on for quite a while and finally stops."
    # "and ends." comes 20 s in, too early; then no sentence end in sight: the window closes at a
    # cue once the slack (45 s x 1.5 = 67.5 s) runs out
    assert texts[1] == " ".join(lines[7:14]) and texts[2] == " ".join(lines[14:])
    assert " ".join(texts) == " ".join(lines)
