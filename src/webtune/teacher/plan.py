"""Before the first request to the teacher: the plan in one line (requests, estimated tokens, cost)
and the caps (`teacher.max_requests`, `teacher.max_cost`), held like a Bright Data collection's
(sources/brightdata_cost.py): a plan over a cap is refused before anything is sent, or, with
`teacher.on_cap: partial`, cut to what fits (the rest: `teacher:cap_reached`). While asking, `Budget`
holds the same caps against what was really spent (a reply may be longer than estimated)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

from ..errors import WebtuneError
from ..sources.brightdata_cost import usd

CHARS_PER_TOKEN = 4          # a rough English average; the plan says "about"
TOKENS_PER_QUESTION = 30


def estimate_tokens(messages: list[dict], n: int, answers: bool, max_tokens: int) -> tuple[int, int]:
    """(input, output) tokens of one request, estimated: 4 characters a token, ~30 tokens a question."""
    chars = sum(len(m["content"]) for m in messages)
    out = n * TOKENS_PER_QUESTION * (4 if answers else 1) + 10
    return chars // CHARS_PER_TOKEN + 8 * len(messages), min(out, max_tokens)


def cost_of(t, input_tokens: int, output_tokens: int) -> float | None:
    if t.price_input_per_1m is None or t.price_output_per_1m is None:
        return None
    return (input_tokens * t.price_input_per_1m + output_tokens * t.price_output_per_1m) / 1e6


@dataclass
class Plan:
    sections: int          # sections (records) the teacher writes for
    cached: int            # of them, answered already (no request)
    requests: int          # first requests to send (a re-ask of an unparseable reply may add one each)
    input_tokens: int
    output_tokens: int
    cost: float | None
    capped: int = 0        # requests left out by on_cap=partial

    def line(self, t) -> str:
        where = t.base_url or "https://api.openai.com/v1"
        caps = ", ".join(f"{k}={v:g}" for k, v in (("max_requests", t.max_requests), ("max_cost", t.max_cost))
                         if v is not None) or "none"
        cost = ("unknown (set teacher.price_input_per_1m and price_output_per_1m for an estimate)" if self.cost is None
                else f"about {usd(self.cost)} at ${t.price_input_per_1m:g}/${t.price_output_per_1m:g} per 1M "
                     f"input/output tokens (an estimate)")
        cut = f"; {self.capped:,} over the caps left out (teacher:cap_reached)" if self.capped else ""
        if not self.requests and not self.capped:
            return f"teacher {t.model}: {self.sections:,} sections, all cached (runs/.cache/teacher): no request"
        return (f"teacher {t.model} at {where}: {self.sections:,} sections, {self.cached:,} cached; "
                f"{self.requests:,} requests (at most {2 * self.requests:,} with re-asks){cut}; about "
                f"{self.input_tokens:,} input + {self.output_tokens:,} output tokens; cost: {cost}; caps: {caps}")


def make_plan(t, sections: int, cached: int, estimates: list[tuple[int, int]]) -> tuple[Plan, int]:
    """The plan for the uncached requests' (input, output) token estimates, in input order, and how
    many of them are asked: all, or (on_cap=partial) the first ones that fit the caps. Raises when a
    cap is exceeded and on_cap=refuse, or when max_cost has no prices to compare with."""
    if t.max_cost is not None and cost_of(t, 0, 0) is None:
        raise WebtuneError(f"teacher.max_cost={t.max_cost:g} needs prices to compare with: set "
                           f"teacher.price_input_per_1m and teacher.price_output_per_1m (USD per 1M tokens)")
    fits, tin, tout = 0, 0, 0
    for i, (a, b) in enumerate(estimates):
        cost = cost_of(t, tin + a, tout + b)
        if (t.max_requests is not None and i + 1 > t.max_requests) or (
                t.max_cost is not None and cost > t.max_cost):
            break
        fits, tin, tout = i + 1, tin + a, tout + b
    all_in, all_out = sum(a for a, _ in estimates), sum(b for _, b in estimates)
    full = Plan(sections, cached, len(estimates), all_in, all_out, cost_of(t, all_in, all_out))
    if fits == len(estimates):
        return full, fits
    if str(t.on_cap) != "partial":
        over = (f"{len(estimates):,} requests, over teacher.max_requests={t.max_requests}"
                if t.max_requests is not None and len(estimates) > t.max_requests
                else f"about {usd(full.cost)}, over teacher.max_cost={t.max_cost:g}")
        raise WebtuneError(f"the teacher would need {over}: nothing was sent. Raise the cap, ask for fewer "
                           f"sections (or a smaller n), or set teacher.on_cap=partial to ask what fits "
                           f"(the rest: teacher:cap_reached)")
    return Plan(sections, cached, fits, tin, tout, cost_of(t, tin, tout), len(estimates) - fits), fits


class Budget:
    """The caps against what is really sent and spent, shared by the asking threads."""

    def __init__(self, t):
        self.t = t
        self.requests = self.first_requests = 0
        self.input_tokens = self.output_tokens = 0
        self._lock = threading.Lock()

    def take(self, estimate: tuple[int, int], reask: bool = False) -> bool:
        """Reserve one request (its estimated tokens) if the caps allow it. A re-ask of an unparseable
        reply is outside max_requests (the plan counts first requests: "at most 2x with re-asks")."""
        t = self.t
        with self._lock:
            if not reask and t.max_requests is not None and self.first_requests + 1 > t.max_requests:
                return False
            cost = cost_of(t, self.input_tokens + estimate[0], self.output_tokens + estimate[1])
            if t.max_cost is not None and cost is not None and cost > t.max_cost:
                return False
            self.requests += 1
            self.first_requests += not reask
            return True

    def spent(self, input_tokens: int, output_tokens: int) -> None:
        with self._lock:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    @property
    def cost(self) -> float | None:
        return cost_of(self.t, self.input_tokens, self.output_tokens)
