"""Bright Data Marketplace Dataset API: a ready dataset, filtered, as a source (`kind: brightdata_dataset`).

Wire contract: docs/contracts/brightdata.md, "Marketplace". `POST /datasets/filter` (JSON, or
multipart when the filter names value-list files) starts a snapshot `snap_...` of the matching
records, at most `records_limit` of them (a sample is just a small `records_limit`; with no filter
the sample asks for records whose first field is not null, as Bright Data's SDK does). The
snapshot id is written to `snapshot.json` before polling `GET /datasets/snapshots/{id}`
(scheduled|building|ready|failed), then `/datasets/snapshots/{id}/download` is fetched, retrying a
202 "building" even after the status said ready. The whole API allows 120 requests an hour, so
polls are spaced at least 3600 / `requests_per_hour` seconds apart and every request takes from
one budget. The filter bills (per record; a filter that matches nothing is free); there is no
cancel for marketplace snapshots, so Ctrl-C only stops waiting.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import orjson
import requests
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from ..config import container
from ..errors import WebtuneError
from ..fileio import sha256_file, write_json
from .brightdata import STATE_FILE, known_snapshot, poll_answer, wait_ready
from .brightdata_cost import approve, marketplace_plan
from .brightdata_download import Downloader
from .brightdata_http import Client, RequestBudget, body_message, read_state, redact, snapshot_id_of, token

GROUPS = ("and", "or")
NULL_TESTS = ("is_null", "is_not_null")
LEAF_OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not_in", "includes", "not_includes",
                  "array_includes", "not_array_includes")
FILE_OPERATORS = ("in", "not_in", "includes", "not_includes", "array_includes", "not_array_includes")
MAX_DEPTH = 3


def acquire(cfg, source_name: str, raw_dir: Path, console: Console | None = None, allow_paid: bool = True) -> Path:
    """The filtered snapshot in `raw_dir/<snap_id>.jsonl.gz` (read by brightdata.iter_records)."""
    raw_dir, secret = Path(raw_dir), None
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        state = read_state(raw_dir / STATE_FILE)
        snapshot_id = known_snapshot(cfg, state, raw_dir)
        if snapshot_id and (raw_dir / f"{snapshot_id}.jsonl.gz").exists():
            return raw_dir / f"{snapshot_id}.jsonl.gz"
        files = _check_config(cfg)
        secret = token(cfg)
        console = console or Console(stderr=True)
        market = _Market(Client(cfg, secret, console), console)
        if snapshot_id is None:
            plan = marketplace_plan(cfg)
            approve(plan, cfg, source_name, console, allow_paid,
                    "no snapshot of this marketplace filter yet, and a filter bills: `webtune preview ... "
                    "--allow-trigger` runs (and pays for) it once, as does `webtune run`; or set "
                    "source.brightdata.snapshot_id=snap_...")
            snapshot_id = market.filter(_filter(cfg, market), files)
            state = {"snapshot_id": snapshot_id, "dataset_id": cfg.dataset_id, "api": "marketplace",
                     "records_limit": cfg.records_limit,
                     "requested_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            write_json(raw_dir / STATE_FILE, state)          # before polling: resume continues it
            console.print(f"[bold]{source_name}[/]: marketplace snapshot {snapshot_id} of dataset {cfg.dataset_id}; "
                          f"saved in {raw_dir / STATE_FILE}")
        elif state is None:
            state = {"snapshot_id": snapshot_id, "dataset_id": cfg.dataset_id, "api": "marketplace"}
            write_json(raw_dir / STATE_FILE, state)
        try:
            status = market.wait_ready(snapshot_id, raw_dir)
        except KeyboardInterrupt:
            raise WebtuneError(f"stopped waiting for marketplace snapshot {snapshot_id} (Bright Data has no cancel "
                               f"for these; the job ends within 5 minutes); its id is saved in "
                               f"{raw_dir / STATE_FILE}: `webtune resume RUN_DIR` continues it") from None
        state["status"] = {k: status.get(k) for k in ("status", "dataset_size", "file_size", "cost")}
        write_json(raw_dir / STATE_FILE, state)
        path, lines = market.downloader().download(snapshot_id, "jsonl", raw_dir)
        _reconcile(cfg, snapshot_id, lines, status, console, source_name)
        console.print(f"[bold]{source_name}[/]: marketplace snapshot {snapshot_id}: {lines} records downloaded to {path}"
                      + (f" (cost ${status['cost']})" if status.get("cost") is not None else ""))
        return path
    except WebtuneError as err:
        raise type(err)(redact(f"source {source_name!r}: {err}", secret)) from None


def cache_identity(cfg) -> dict:
    """What changes a marketplace snapshot: the dataset, the filter (and its files' bytes), the limit."""
    base = {"api": "marketplace", "base_url": cfg.base_url.rstrip("/")}
    if cfg.snapshot_id:
        return {**base, "snapshot_id": cfg.snapshot_id}
    files = {Path(p).name: _filter_file_sha256(Path(p)) for p in cfg.filter_files}
    return {**base, "dataset_id": cfg.dataset_id, "filter": container(cfg.filter), "records_limit": cfg.records_limit,
            "filter_files": files}


def cache_covers(wanted: dict, cached: dict) -> bool:
    """A marketplace snapshot serves exactly its own filter (it has no field selection)."""
    return wanted == cached


# ---------------------------------------------------------------- the API
class _Market:
    def __init__(self, client: Client, console: Console):
        self.client, self.cfg, self.console = client, client.cfg, console
        self.budget = RequestBudget(client.host, self.cfg.requests_per_hour, console)
        self.interval = max(float(self.cfg.poll_interval), 3600 / max(1, int(self.cfg.requests_per_hour)))

    def get(self, path: str, what: str, **kwargs) -> requests.Response:
        self.budget.take()
        try:
            return self.client.request("GET", "/datasets" + path, what, **kwargs)
        except requests.RequestException as err:
            raise WebtuneError(f"the {what} got no answer ({type(err).__name__}); check source.brightdata.base_url "
                               "and the network, then resume the run") from None

    def first_field(self) -> str:
        """The dataset's first active field (a sample filters on it being present)."""
        resp = self.get(f"/{self.cfg.dataset_id}/metadata", "metadata request")
        if resp.status_code != 200:
            raise self.client.error(resp, "metadata request", _unknown_dataset(self.cfg.dataset_id)
                                    + "; or give source.brightdata.filter (metadata is missing for some datasets)")
        fields = (resp.json() or {}).get("fields") or {}
        active = [name for name, spec in fields.items() if not isinstance(spec, dict) or spec.get("active", True)]
        if not active:
            raise WebtuneError(f"dataset {self.cfg.dataset_id} lists no fields; give source.brightdata.filter")
        return active[0]

    def filter(self, body_filter: dict, files: list[Path]) -> str:
        cfg, what = self.cfg, "marketplace filter"
        self.budget.take()
        try:
            if files:
                params = {"dataset_id": cfg.dataset_id, **({"records_limit": cfg.records_limit} if cfg.records_limit else {})}
                upload = [("files[]", (p.name, p.read_bytes(), "text/csv" if p.suffix == ".csv" else "application/json"))
                          for p in files]
                resp = self.client.request("POST", "/datasets/filter", what, params=params,
                                           data={"filter": orjson.dumps(body_filter).decode()}, files=upload)
            else:
                body = {"dataset_id": cfg.dataset_id, "filter": body_filter,
                        **({"records_limit": cfg.records_limit} if cfg.records_limit else {})}
                resp = self.client.request("POST", "/datasets/filter", what, data=orjson.dumps(body),
                                           headers={"Content-Type": "application/json"})
        except requests.RequestException as err:
            raise WebtuneError(f"the {what} on dataset {cfg.dataset_id} got no answer ({type(err).__name__}); "
                               f"{_not_sent_again()}") from None
        if resp.status_code == 422:
            raise WebtuneError(f"the filter matched no records of dataset {cfg.dataset_id} (422: {body_message(resp)}); "
                               "nothing was billed: loosen source.brightdata.filter")
        if resp.status_code >= 500:
            raise WebtuneError(f"Bright Data answered {resp.status_code} to the {what} on dataset {cfg.dataset_id} "
                               f"({body_message(resp)}); {_not_sent_again()}")
        if resp.status_code != 200:
            raise self.client.error(resp, what, _unknown_dataset(cfg.dataset_id))
        return snapshot_id_of(resp, f"the {what}", _not_sent_again())

    def wait_ready(self, snapshot_id: str, raw_dir: Path) -> dict:
        return wait_ready(self.console, snapshot_id, lambda: self._status(snapshot_id), self.interval,
                          float(self.cfg.poll_timeout), raw_dir,
                          f"{self.client.base}/datasets/snapshots/{snapshot_id}", records_key="dataset_size")

    def _status(self, snapshot_id: str) -> dict | None:
        try:
            resp = self.get(f"/snapshots/{snapshot_id}", "snapshot status check")
        except WebtuneError:
            return None                             # a lost answer: polled again
        body = poll_answer(self.client, resp, "snapshot status check", snapshot_id)
        if body and body.get("status") == "failed" and not body.get("error_message"):
            body["error_message"] = " ".join(str(body[k]) for k in ("error", "error_code") if body.get(k)) or None
        return body

    def downloader(self) -> Downloader:
        return Downloader(self.client, self.console, "/datasets/snapshots/{id}/download",
                          "/datasets/snapshots/{id}/parts", self.interval, before_request=self.budget.take)


# ---------------------------------------------------------------- the filter
def _filter(cfg, market: _Market) -> dict:
    """The configured filter; a sample's is-not-null filter when there is none."""
    return container(cfg.filter) if cfg.filter is not None else {"name": market.first_field(), "operator": "is_not_null"}


def check_filter(node, files: set[str], at: str = "source.brightdata.filter", depth: int = 1) -> None:
    """The Filter API's grammar, before anything is sent: one line naming the key that is wrong."""
    if not isinstance(node, dict):
        raise WebtuneError(f"{at}: a filter is an object (name/operator/value, or operator and/or with filters)")
    if depth > MAX_DEPTH:
        raise WebtuneError(f"{at}: filters nest at most {MAX_DEPTH} deep")
    op = node.get("operator")
    if op in GROUPS:
        allowed, children = {"operator", "filters", "combine_nested_fields"}, node.get("filters")
        if not isinstance(children, list) or not children:
            raise WebtuneError(f"{at}: operator {op!r} needs a non-empty `filters` list")
    elif op in NULL_TESTS:
        allowed, children = {"name", "operator"}, []
    elif op in LEAF_OPERATORS:
        allowed, children = {"name", "operator", "value"}, []
        if "value" not in node:
            raise WebtuneError(f"{at}: operator {op!r} needs a value")
        value = node["value"]
        if isinstance(value, str) and Path(value).suffix in (".csv", ".json") and value not in files:
            raise WebtuneError(f"{at}: value {value!r} names a file that is not in source.brightdata.filter_files")
        if isinstance(value, str) and value in files and op not in FILE_OPERATORS:
            raise WebtuneError(f"{at}: a value-list file works with {', '.join(FILE_OPERATORS)}, not {op!r}")
    else:
        raise WebtuneError(f"{at}.operator={op!r} is not one of {', '.join(GROUPS + NULL_TESTS + LEAF_OPERATORS)}")
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise WebtuneError(f"{at}: key {unknown[0]!r} is not allowed here (allowed: {', '.join(sorted(allowed))})")
    if op not in GROUPS and not isinstance(node.get("name"), str):
        raise WebtuneError(f"{at}: `name` (the field, sub-fields with ':') is missing")
    for i, child in enumerate(children):
        check_filter(child, files, f"{at}.filters[{i}]", depth + 1)


def _check_config(cfg) -> list[Path]:
    """Everything about the request that can be wrong, before anything is sent; the filter's files."""
    if not cfg.dataset_id:
        raise WebtuneError("source.brightdata.dataset_id is empty: set it (gd_...); `webtune sources datasets` "
                           "lists the marketplace's datasets")
    if cfg.filter is None and not cfg.records_limit:
        raise WebtuneError("source.brightdata.filter is not set: give a filter, or a records_limit for a sample "
                           "(records whose first field is set)")
    files = [Path(p) for p in cfg.filter_files]
    for path in files:
        if not path.is_file():
            raise WebtuneError(f"source.brightdata.filter_files: {path} does not exist")
        if path.suffix not in (".csv", ".json"):
            raise WebtuneError(f"source.brightdata.filter_files: {path} is neither .csv (a header, then one value "
                               "a line) nor .json (an array of objects)")
    if cfg.records_limit is not None and cfg.records_limit < 1:
        raise WebtuneError(f"source.brightdata.records_limit={cfg.records_limit} must be a positive number")
    if cfg.filter is not None:
        check_filter(container(cfg.filter), {p.name for p in files})
    return files


def _reconcile(cfg, snapshot_id: str, lines: int, status: dict, console: Console, source_name: str) -> None:
    """The download against what the status said and what was asked for."""
    if cfg.records_limit and lines > cfg.records_limit:
        raise WebtuneError(f"marketplace snapshot {snapshot_id} holds {lines} records, over "
                           f"source.brightdata.records_limit={cfg.records_limit}; report this to Bright Data")
    size = status.get("dataset_size")
    if isinstance(size, int) and size != lines:
        console.print(f"[yellow]{source_name}[/]: snapshot {snapshot_id} said {size} records, the download holds {lines}")


def _not_sent_again() -> str:
    return ("not sent again because a filter bills: if the Bright Data control panel shows a new snapshot, "
            "continue it with source.brightdata.snapshot_id=snap_...; otherwise run again")


def _unknown_dataset(dataset_id: str) -> str:
    return (f"unknown marketplace dataset {dataset_id!r}: check source.brightdata.dataset_id "
            "(`webtune sources datasets` lists them)")


def _filter_file_sha256(path: Path) -> str:
    if not path.is_file():
        raise WebtuneError(f"source.brightdata.filter_files: {path} does not exist")
    return sha256_file(path)


# ---------------------------------------------------------------- webtune sources datasets
def datasets_command(ns) -> int:
    """`webtune sources datasets [--search WORD]`: id, name and record count of every dataset
    /datasets/list gives (it has no prices)."""
    cfg = OmegaConf.create({"base_url": getattr(ns, "base_url", None) or "https://api.brightdata.com",
                            "api_key_env": getattr(ns, "api_key_env", None) or "BRIGHTDATA_API_TOKEN",
                            "timeout": 60.0, "retry_backoff": 2.0, "rate_limit_wait": 2.0})
    console = Console()
    client = Client(cfg, token(cfg, "--api-key-env"), Console(stderr=True))
    try:
        resp = client.request("GET", "/datasets/list", "dataset list")
    except requests.RequestException as err:
        raise WebtuneError(f"the dataset list at {client.base}/datasets/list got no answer ({type(err).__name__}); "
                           "check --base-url and the network") from None
    if resp.status_code != 200:
        raise client.error(resp, "dataset list", "no dataset list at this --base-url")
    rows = resp.json() if resp.content.strip() else []
    word = (getattr(ns, "search", None) or "").lower()
    hits = [r for r in rows if isinstance(r, dict) and (word in str(r.get("id", "")).lower()
                                                        or word in str(r.get("name", "")).lower())]
    table = Table("id", "name", "records", title=f"Bright Data datasets ({len(hits)} of {len(rows)})")
    for r in hits:
        size = r.get("size")
        table.add_row(str(r.get("id")), str(r.get("name")), f"{size:,}" if isinstance(size, int) else "-")
    console.print(table)
    console.print("Prices are not in the list: see each dataset's page. Use one with "
                  "`source=brightdata_marketplace source.brightdata.dataset_id=<id>`.")
    return 0
