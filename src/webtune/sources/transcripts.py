"""VTT and SRT transcripts (webvtt-py): timed segments, rolling auto-captions merged, windows.

YouTube-style auto-captions repeat the previous line at the top of each cue ("rolling"
captions) and add tiny cues that hold only that line; read naively the text doubles. We keep a
caption line only when it differs from the lines just emitted.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

# A cue timing line: webvtt-py accepts these (either decimal mark, so one pattern serves both).
_TS = r"(?:\d+:)?\d{1,2}:\d{1,2}[.,]\d{1,3}"
_TIMING = re.compile(rf"^\s*({_TS})\s*-->\s*({_TS})(?:\s|$)")
_TAG = re.compile(r"<[^>]*>")


class TranscriptError(ValueError):
    """A transcript that cannot become a record; `reason` is the ledger reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class Segment:
    start: float
    end: float
    text: str

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text}


def seconds(stamp: str) -> float:
    """'01:02:03.456' or '02:03,456' -> seconds."""
    parts = stamp.replace(",", ".").split(":")
    total = 0.0
    for p in parts:
        total = total * 60 + float(p)
    return round(total, 3)


def check_timings(text: str) -> None:
    """webvtt-py silently skips cues with malformed timings; we refuse to lose them silently."""
    for n, line in enumerate(text.splitlines(), 1):
        if "-->" not in line:
            continue
        m = _TIMING.match(line)
        if not m:
            raise TranscriptError("broken_timestamps", f"line {n}: bad cue timing {line.strip()[:80]!r}")
        start, end = seconds(m.group(1)), seconds(m.group(2))
        if end < start:
            raise TranscriptError("broken_timestamps", f"line {n}: cue ends before it starts {line.strip()[:80]!r}")


def parse(data: bytes, fmt: str) -> list[Segment]:
    """Segments of a VTT or SRT file, rolling duplicates merged. Raises TranscriptError."""
    import webvtt
    from webvtt.errors import MalformedFileError

    if not data.strip():
        raise TranscriptError("empty_file", "the file is empty")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TranscriptError("invalid_utf8", f"invalid UTF-8 at byte {e.start}") from None
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    check_timings(text)
    try:
        captions = webvtt.from_buffer(io.StringIO(text), format=fmt).captions
    except (MalformedFileError, ValueError) as e:
        raise TranscriptError("malformed_transcript", f"not a valid {fmt.upper()} file: {e}") from None
    segments: list[Segment] = []
    recent: list[str] = []  # the last lines kept: a rolling cue repeats them
    for cap in captions:
        for raw in cap.lines:
            line = " ".join(_TAG.sub("", raw).split())
            if not line or line in recent:
                continue
            segments.append(Segment(seconds(cap.start), seconds(cap.end), line))
            recent = (recent + [line])[-2:]
    if not segments:
        raise TranscriptError("no_captions", "no caption text found")
    return segments


WINDOW_SLACK = 0.5  # a window may run this share past window_seconds to end with a sentence


def windows(segments: list[Segment], window_seconds: float) -> list[list[Segment]]:
    """Cut into consecutive windows of about `window_seconds`, each ending at a cue (a segment is
    never split): the first cue ending a sentence once the window is long enough, else, past
    WINDOW_SLACK more (captions without punctuation), the cue where that time runs out."""
    if window_seconds <= 0:
        return [segments]
    out: list[list[Segment]] = []
    for seg in segments:
        if not out or _window_full(out[-1], seg, window_seconds):
            out.append([])
        out[-1].append(seg)
    return out


def _window_full(window: list[Segment], seg: Segment, window_seconds: float) -> bool:
    """Does `seg` start the next window?"""
    from ..prose import ends_sentence

    elapsed = seg.start - window[0].start
    return elapsed >= window_seconds * (1 + WINDOW_SLACK) or (
        elapsed >= window_seconds and ends_sentence(window[-1].text, strict=True))


def clock(t: float) -> str:
    """Seconds as m:ss or h:mm:ss, for prompts."""
    t = int(t)
    h, m, s = t // 3600, t % 3600 // 60, t % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def title_from_name(stem: str) -> str:
    return " ".join(stem.replace("_", " ").replace("-", " ").split())


def window_fields(title: str, window: list[Segment], index: int, count: int) -> dict:
    """The record fields of one window (or of the whole transcript when count is 1)."""
    start, end = window[0].start, window[-1].end
    return {
        "title": title,
        "text": " ".join(s.text for s in window),
        "segments": [s.as_dict() for s in window],
        "start": start,
        "end": end,
        "time_range": f"{clock(start)}-{clock(end)}",
        "window": index,
        "windows": count,
    }
