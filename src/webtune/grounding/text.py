"""Words as the detector compares them: lower-cased, light plural stemming, hyphens split, with
character offsets so a finding points at the exact place in the text."""
from __future__ import annotations

import re
from functools import lru_cache

# A word: letters/digits/underscore runs, dotted names kept whole (os.path.join, 3.45.1).
_WORD = re.compile(r"\w+(?:[.']\w+)*")

STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being
below between both but by can could did do does doing down during each even every few for from
further had has have having he her here hers him his how i if in into is it its itself just let me
more most my no nor not now of off on once only or other our ours out over own per same she should
so some such than that the their theirs them then there these they this those through to too under
until up us very via was we were what when where which while who whom why will with within without
would you your yours yourself s t d ll m re ve new one ones make makes made use used uses using get
gets like well way ways day days time thing things every each lot lots much many may might must
item items product products set sets yes any all good great best better high quality premium perfect
ideal easy small large big extra super top real true
""".split())


@lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    """lower case, and a plural's last s off (pockets = pocket, batteries = battery)."""
    w = word.lower().replace("\u2019", "'")
    if w.endswith("'s"):
        w = w[:-2]
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 4 and w.endswith(("ches", "shes", "sses", "xes")):
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def words(text: str) -> list[tuple[str, int, int]]:
    """(stemmed word, start, end) for each word of `text`."""
    return [(stem(m.group()), m.start(), m.end()) for m in _WORD.finditer(text)]


def tokens(text: str) -> list[str]:
    return [w for w, _, _ in words(text)]


def ngrams(toks: list[str], max_n: int) -> set[tuple[str, ...]]:
    out = set()
    for n in range(1, max_n + 1):
        for i in range(len(toks) - n + 1):
            out.add(tuple(toks[i:i + n]))
    return out


def flatten(value) -> list[str]:
    """Every string (and number, as text) inside a field value, in order."""
    if value is None or isinstance(value, bool):
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (int, float)):
        return [format(value, "g") if isinstance(value, float) else str(value)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in flatten(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in flatten(v)]
    return [str(value)]


def source_text(source) -> str:
    """A source as one text: a string as it is, a record's fields one per line."""
    if isinstance(source, str):
        return source
    return "\n".join(f"{name}: {s}" for name, value in source.items() for s in flatten(value))
