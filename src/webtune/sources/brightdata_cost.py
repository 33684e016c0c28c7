"""Before any Bright Data request that bills: what it will ask for, what it may cost, and the bounds.

Bright Data bills per delivered record and has no estimate endpoint (docs/contracts/brightdata.md,
"Cost"), so the estimate is ours: a URL collection gives about one record per input, a discovery
at most `limit_per_input` per input, everything at most `limit_multiple_results` (marketplace:
`records_limit`); cost = records / 1000 x `price_per_1k` when that is known. `max_records` and
`max_cost` refuse, in one line, before the request is sent.

`custom_output_fields` is what the run's templates read (jinja2's static analysis of every turn),
the task's required fields and input-schema requirements, and the fields the ledger needs; None
(ask for every field) when a template's variables cannot be known (it includes another file).
"""
from __future__ import annotations

from dataclasses import dataclass, field


from ..errors import PaidRequestRefused, WebtuneError

ERROR_FIELDS = ("error", "error_code", "input")     # what an error record is told apart and explained by


@dataclass
class Plan:
    """What one billing request asks for."""

    request: str                     # "trigger", "sync scrape", "marketplace filter", "Crawl API collection"
    inputs: int | None               # None: a marketplace filter has no inputs
    caps: dict[str, int | None] = field(default_factory=dict)
    records: int | None = None       # the estimate (an upper bound where a cap gives one); None: unknown
    bounded: bool = False            # `records` is a cap, not a guess
    price_per_1k: float | None = None

    @property
    def cost(self) -> float | None:
        if self.records is None or self.price_per_1k is None:
            return None
        return self.records / 1000 * self.price_per_1k

    def line(self, source_name: str) -> str:
        caps = ", ".join(f"{k}={v}" for k, v in self.caps.items() if v is not None) or "none"
        given = f"{self.inputs} inputs; " if self.inputs is not None else ""
        records = ("unknown (no cap)" if self.records is None
                   else f"{'at most' if self.bounded else 'about'} {self.records:,}")
        cost = ("unknown (set source.brightdata.price_per_1k for an estimate)" if self.cost is None
                else f"about {usd(self.cost)} at ${self.price_per_1k:g} per 1,000 records (an estimate)")
        return f"{source_name}: Bright Data {self.request}: {given}caps: {caps}; records: {records}; cost: {cost}"


def usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def scraper_plan(cfg, n_inputs: int, request: str) -> Plan:
    per_input, total = cfg.limit_per_input, cfg.get("limit_multiple_results")
    if cfg.type == "discover_new":
        records = n_inputs * per_input if per_input else None
    else:
        records = n_inputs                  # one record per URL (a listing page may give more)
    bounded = cfg.type == "discover_new" and records is not None
    if total is not None and (records is None or total <= records):
        records, bounded = int(total), True
    return Plan(request, n_inputs, {"limit_per_input": per_input, "limit_multiple_results": total},
                records, bounded, cfg.get("price_per_1k"))


def marketplace_plan(cfg) -> Plan:
    limit = cfg.get("records_limit")
    return Plan("marketplace filter", None, {"records_limit": limit}, limit, limit is not None,
                cfg.get("price_per_1k"))


def check(plan: Plan, cfg) -> None:
    """Refuse, before anything bills, a plan above `max_records` or `max_cost`."""
    cap_names = " or ".join(f"source.brightdata.{k}" for k in plan.caps)
    if cfg.get("max_cost") is not None and plan.price_per_1k is None:
        raise WebtuneError(f"source.brightdata.max_cost={cfg.max_cost:g} needs a price to compare with: set "
                           "source.brightdata.price_per_1k (USD per 1,000 records, from the dataset's page)")
    for key in ("max_records", "max_cost"):
        if cfg.get(key) is not None and plan.records is None:
            raise WebtuneError(f"source.brightdata.{key}={cfg.get(key)} but the {plan.request} has no bound on "
                               f"its records: set {cap_names}")
    max_records, max_cost = cfg.get("max_records"), cfg.get("max_cost")
    if max_records is not None and plan.records > max_records:
        raise WebtuneError(f"the {plan.request} would deliver {'up to' if plan.bounded else 'about'} "
                           f"{plan.records:,} records, over source.brightdata.max_records={max_records}: "
                           f"lower {cap_names} or the number of inputs, or raise max_records")
    if max_cost is not None and plan.cost > max_cost:
        raise WebtuneError(f"the {plan.request} would cost about {usd(plan.cost)} ({plan.records:,} records "
                           f"at ${plan.price_per_1k:g}/1k), over source.brightdata.max_cost={max_cost:g}: "
                           f"lower {cap_names} or the number of inputs, or raise max_cost")


def approve(plan, cfg, source_name: str, console, allow_paid: bool, refusal: str) -> None:
    """Before a billed request: show its plan, hold it to the caps, and refuse it (PaidRequestRefused,
    `refusal` saying how to allow it) where paid requests are not allowed."""
    console.print(plan.line(source_name))
    check(plan, cfg)
    if not allow_paid:
        raise PaidRequestRefused(refusal)


# ---------------------------------------------------------------- custom_output_fields
def output_fields(cfg, reads: set[str] | None = None, group_field: str | None = None) -> list[str] | None:
    """The fields to ask Bright Data for (sorted), or None for all of them.

    `cfg` is source.brightdata; `reads` the record fields the run's templates, filters and dedupe read
    (`prepare.fields.fields_read`; None: unknown, ask for all)."""
    given = cfg.get("custom_output_fields")
    needed = list(cfg.primary_fields) + list(ERROR_FIELDS) + ([group_field] if group_field else [])
    if given is not None:
        return sorted(set(given) | set(needed)) if len(given) else None
    if reads is None:
        return None
    return sorted(set(reads) | set(needed))
