"""Bright Data Web Scraper API (datasets v3): collect once, poll, download, stream records.

Wire contract: docs/contracts/brightdata.md. Two ways to collect, `source.brightdata.mode`:
  async  POST /trigger, then poll /progress and download /snapshot (any number of inputs);
  sync   POST /scrape (at most 20 inputs): the records inline within a minute, or a 202 with a
         snapshot id, which is then polled and downloaded as async;
  auto   (default) sync for at most 20 inputs, else async.
Both bill, so each is sent once: a 429 (a refusal: nothing created) is waited out, but a 5xx or a
lost answer is never sent again (the collection may exist). Before sending, the plan (inputs,
caps, an estimate of records and cost) is printed and `max_records` / `max_cost` are enforced.
The snapshot id is written to `snapshot.json` before polling, so a killed run resumes the same
snapshot; Ctrl-C while polling asks whether to cancel the collection or leave it running (no
terminal: left running). The download is kept gzip-compressed as JSONL whatever format was asked.
"""
from __future__ import annotations

import gzip
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import orjson
import requests
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

from ..console import progress
from ..config import container
from ..errors import WebtuneError
from ..fileio import write_json
from ..records import Record, Rejection, record_id
from .brightdata_cost import approve, output_fields, scraper_plan
from .brightdata_download import FORMATS, Downloader, save_inline, snapshot_gone
from .brightdata_http import SAFE_ID, Client, body_message, read_state, redact, snapshot_id_of, token

STATE_FILE = "snapshot.json"
MODES = ("auto", "sync", "async")
SYNC_MAX_INPUTS = 20         # /scrape takes at most 20 inputs
SYNC_WAIT = 60.0             # ... and answers within a minute, else 202 with a snapshot id
UNANSWERED_POLLS = 10        # consecutive polls without an answer before giving up
V3 = "/datasets/v3"


# ---------------------------------------------------------------- public interface
def acquire(cfg: DictConfig, source_name: str, raw_dir: Path, console: Console | None = None,
            allow_paid: bool = True, ask_cancel: Optional[Callable[[str], bool]] = None) -> Path:
    """Get the snapshot into `raw_dir/<snapshot_id>.jsonl.gz` and return that path.

    Collects only when neither `raw_dir/snapshot.json` (a resumed run) nor `cfg.snapshot_id` names
    a snapshot already. `allow_paid=False` refuses to collect (PaidRequestRefused); `ask_cancel`
    decides on Ctrl-C whether to cancel the collection (default: ask on the terminal)."""
    fields = output_fields(cfg)
    return collect(cfg, source_name, Path(raw_dir), cfg.dataset_id, lambda: _load_inputs(cfg), fields,
                   console=console, allow_paid=allow_paid, ask_cancel=ask_cancel)


def collect(cfg, source_name: str, raw_dir: Path, dataset_id: str, load_inputs: Callable[[], list[dict]],
            fields: list[str] | None, request: str = "collection", console: Console | None = None,
            allow_paid: bool = True, ask_cancel=None) -> Path:
    """acquire() for any scraper dataset (the Crawl API too): inputs and output fields given."""
    secret = None
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        fmt = _check(cfg)
        state = read_state(raw_dir / STATE_FILE)
        snapshot_id = known_snapshot(cfg, state, raw_dir)
        if snapshot_id and (raw_dir / f"{snapshot_id}.jsonl.gz").exists():
            return raw_dir / f"{snapshot_id}.jsonl.gz"        # already downloaded: no network
        _refuse_finished_state(state, snapshot_id, raw_dir)
        secret = token(cfg)
        console = console or Console(stderr=True)
        scraper = _Scraper(Client(cfg, secret, console), dataset_id, fields)
        if snapshot_id is None:
            snapshot_id, state, inline = _start(scraper, cfg, source_name, raw_dir, load_inputs(), request,
                                                console, allow_paid)
            if inline is not None:
                return inline
        elif state is None:
            state = {"snapshot_id": snapshot_id, "dataset_id": dataset_id, "triggered_at": None}
            write_json(raw_dir / STATE_FILE, state)
        try:
            progress = scraper.wait_ready(snapshot_id, raw_dir)
        except KeyboardInterrupt:
            _interrupted(scraper, snapshot_id, raw_dir, state, console, ask_cancel)
        state["progress"] = {k: progress[k] for k in
                             ("status", "records", "errors", "error_codes", "collection_duration")
                             if k in progress}
        write_json(raw_dir / STATE_FILE, state)
        path, lines = scraper.downloader(float(cfg.poll_interval)).download(snapshot_id, fmt, raw_dir)
        console.print(f"[bold]{source_name}[/]: snapshot {snapshot_id}: {lines} records"
                      f" downloaded to {path}" + ("  (the snapshot is empty)" if lines == 0 else ""))
        return path
    except WebtuneError as err:
        raise type(err)(redact(f"source {source_name!r}: {err}", secret)) from None


def _refuse_finished_state(state: dict | None, snapshot_id: str | None, raw_dir: Path) -> None:
    """A collection the user cancelled, or a sync scrape whose records are gone, is not started again
    silently: both would bill again."""
    if state and state.get("cancelled_at"):
        raise WebtuneError(f"Bright Data collection {snapshot_id} was cancelled at your request "
                           f"({state['cancelled_at']}); delete {raw_dir / STATE_FILE} to start a new "
                           "one (it bills again)")
    if state and state.get("mode") == "sync" and str(snapshot_id).startswith("sync_"):
        raise WebtuneError(f"the records of sync scrape {snapshot_id} are gone from {raw_dir}; delete "
                           f"{raw_dir / STATE_FILE} to scrape again (it bills again)")


def _start(scraper, cfg, source_name: str, raw_dir: Path, inputs: list[dict], request: str, console: Console,
           allow_paid: bool) -> tuple[str | None, dict, Path | None]:
    """Plan, check the caps, then trigger (or sync-scrape) the collection: (snapshot id, state, None), or
    (None, state, path) when a sync scrape answered its records inline. The state is saved before polling."""
    dataset_id, fields = scraper.dataset_id, scraper.fields
    sync = _use_sync(cfg, inputs)
    plan = scraper_plan(cfg, len(inputs), f"sync scrape ({request})" if sync else f"trigger ({request})")
    approve(plan, cfg, source_name, console, allow_paid,
            "no snapshot of this source yet, and starting one bills: `webtune preview ... --allow-trigger` "
            "collects (and pays for) it once, as does `webtune run`; or set "
            "source.brightdata.snapshot_id=<an existing snapshot>")
    state = {"dataset_id": dataset_id, "mode": "sync" if sync else "async", "inputs": len(inputs),
             "custom_output_fields": fields,
             "triggered_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if sync:
        with console.status(f"{source_name}: sync scrape of {len(inputs)} inputs (Bright Data answers "
                            "within a minute, else continues it as a snapshot)"):
            got = scraper.scrape(inputs)
        if isinstance(got, bytes):                  # the records came inline
            path, snapshot_id, lines = save_inline(got, raw_dir, "sync_")
            write_json(raw_dir / STATE_FILE, {"snapshot_id": snapshot_id, **state})
            console.print(f"[bold]{source_name}[/]: sync scrape of {len(inputs)} inputs: {lines} records "
                          f"in {path}")
            return None, state, path
        snapshot_id = got
        console.print(f"[bold]{source_name}[/]: the sync scrape did not finish within a minute; "
                      f"Bright Data continues it as snapshot {snapshot_id}: polling it")
    else:
        snapshot_id = scraper.trigger(inputs)
    state = {"snapshot_id": snapshot_id, **state}
    write_json(raw_dir / STATE_FILE, state)           # before polling: resume continues it
    console.print(f"[bold]{source_name}[/]: Bright Data snapshot {snapshot_id} ({len(inputs)} inputs); "
                  f"saved in {raw_dir / STATE_FILE}")
    return snapshot_id, state, None


def iter_records(path: Path, source_name: str, snapshot_id: str,
                 primary_fields: Iterable[str]) -> Iterator[Record | Rejection]:
    """Stream a downloaded snapshot: one Record per data line, a Rejection for everything else.

    Ids are `<source_name>:<snapshot_id>#<1-based line>`; a blank line is a `blank_line` rejection."""
    primary = list(primary_fields)
    try:
        with gzip.open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                rid = record_id(source_name, snapshot_id, n)
                if not line.strip():
                    yield Rejection(rid, source_name, "blank_line", f"{path.name} line {n} is blank")
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as err:
                    yield Rejection(rid, source_name, "malformed_json",
                                    f"{path.name} line {n}: {err}: {line[:200].decode('utf-8', 'replace')}")
                    continue
                if not isinstance(obj, dict):
                    yield Rejection(rid, source_name, "not_an_object",
                                    f"{path.name} line {n}: a JSON {type(obj).__name__}, not an object")
                elif _is_error_record(obj, primary):
                    code = obj.get("error_code") or "unknown"
                    yield Rejection(rid, source_name, f"brightdata_error:{code}", _error_detail(obj))
                else:
                    yield Record(rid, source_name, obj)
    except (OSError, EOFError) as err:
        raise WebtuneError(f"source {source_name!r}: {path} is damaged ({err}); delete it and resume "
                           "the run to download the snapshot again") from None


def cache_identity(cfg: DictConfig) -> dict:
    """What changes what a collection delivers (for the content-addressed source cache)."""
    base = {"api": "scraper", "base_url": cfg.base_url.rstrip("/"), "format": str(cfg.format).lower()}
    if cfg.snapshot_id:
        return {**base, "snapshot_id": cfg.snapshot_id}
    keys = ("dataset_id", "type", "discover_by", "limit_per_input", "limit_multiple_results",
            "include_errors", "mode")
    return {**base, **{k: container(cfg.get(k)) for k in keys}, "inputs": _load_inputs(cfg),
            "custom_output_fields": output_fields(cfg)}


def cache_covers(wanted: dict, cached: dict) -> bool:
    """A cached collection serves a wanted one that differs only in asking for fewer fields."""
    rest = lambda d: {k: v for k, v in d.items() if k != "custom_output_fields"}   # noqa: E731
    if rest(wanted) != rest(cached):
        return False
    have, want = cached.get("custom_output_fields"), wanted.get("custom_output_fields")
    return have is None or (want is not None and set(want) <= set(have))


def with_output_fields(src, reads: set[str] | None):
    """The source config with `brightdata.custom_output_fields` derived from the fields the run reads
    (the same config when there is nothing to derive): call it before keying and acquiring."""
    if src.kind != "brightdata" or src.brightdata.get("custom_output_fields") is not None:
        return src
    fields = output_fields(src.brightdata, reads, src.get("group_field"))
    return OmegaConf.merge(src, {"brightdata": {"custom_output_fields": fields or []}})


# ---------------------------------------------------------------- the HTTP client
class _Scraper:
    def __init__(self, client: Client, dataset_id: str, fields: list[str] | None):
        self.client, self.cfg, self.console = client, client.cfg, client.console
        self.dataset_id, self.fields = dataset_id, fields

    def _params(self, discovery: bool = True) -> dict:
        cfg = self.cfg
        params = {"dataset_id": self.dataset_id, "include_errors": "true" if cfg.include_errors else "false"}
        keys = ("type", "discover_by", "limit_per_input", "limit_multiple_results") if discovery else ()
        for key in keys:
            if cfg.get(key):
                params[key] = str(cfg[key])
        if self.fields:
            params["custom_output_fields"] = "|".join(self.fields)
        return params

    def _not_sent_again(self, what: str) -> str:
        return (f"not sent again because each {what} bills: if the Bright Data control panel shows a new "
                f"snapshot for dataset {self.dataset_id}, continue it with source.brightdata.snapshot_id=<id>; "
                "otherwise run again")

    # ---- trigger / scrape: sent once (429s waited out), never repeated after a 5xx or a lost answer
    def trigger(self, inputs: list[dict]) -> str:
        resp = self._post("/trigger", "trigger", inputs)
        if resp.status_code != 200:
            raise self._refused(resp, "trigger")
        return self._snapshot_id(resp, "trigger")

    def scrape(self, inputs: list[dict]) -> bytes | str:
        """The records (the body of a 200), or the snapshot id of a 202 (continued asynchronously)."""
        params = {**self._params(), "format": "json"}
        resp = self._post("/scrape", "sync scrape", {"input": inputs}, params=params,
                          timeout=max(self.client.timeout, SYNC_WAIT + 30))
        if resp.status_code == 202:
            return self._snapshot_id(resp, "sync scrape")
        if resp.status_code != 200:
            raise self._refused(resp, "sync scrape")
        return resp.content

    def _post(self, path: str, what: str, body, params: dict | None = None, **kwargs) -> requests.Response:
        try:
            return self.client.request("POST", V3 + path, what, params=params or self._params(),
                                       data=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                       **kwargs)
        except requests.RequestException as err:
            raise WebtuneError(f"the {what} request for dataset {self.dataset_id} got no answer "
                               f"({type(err).__name__}); {self._not_sent_again(what)}") from None

    def _refused(self, resp: requests.Response, what: str) -> WebtuneError:
        if resp.status_code >= 500:
            return WebtuneError(f"Bright Data answered {resp.status_code} to the {what} for dataset "
                                f"{self.dataset_id} ({body_message(resp)}); {self._not_sent_again(what)}")
        return self.client.error(resp, what, f"unknown Bright Data dataset {self.dataset_id!r}: check "
                                             "source.brightdata.dataset_id")

    def _snapshot_id(self, resp: requests.Response, what: str) -> str:
        return snapshot_id_of(resp, f"the {what} for dataset {self.dataset_id}", self._not_sent_again(what))

    def cancel(self, snapshot_id: str) -> bool:
        """Cancel a running collection; False when Bright Data says it is not running any more."""
        try:
            resp = self.client.request("POST", f"{V3}/snapshot/{snapshot_id}/cancel", "cancel")
        except requests.RequestException as err:
            raise WebtuneError(f"cancelling snapshot {snapshot_id} got no answer ({type(err).__name__}); "
                               "cancel it in the Bright Data control panel") from None
        if resp.status_code == 400 and "not running" in body_message(resp).lower():
            return False
        if resp.status_code != 200:
            raise self.client.error(resp, "cancel", snapshot_gone(snapshot_id))
        return True

    # ---- progress: poll until ready or failed
    def wait_ready(self, snapshot_id: str, raw_dir: Path) -> dict:
        return wait_ready(self.console, snapshot_id, lambda: self._progress(snapshot_id), float(self.cfg.poll_interval),
                          float(self.cfg.poll_timeout), raw_dir, f"{self.client.base}{V3}/progress/{snapshot_id}")

    def _progress(self, snapshot_id: str) -> dict | None:
        """The progress body, or None when this poll failed in a transient way."""
        try:
            resp = self.client.request("GET", f"{V3}/progress/{snapshot_id}", "progress check")
        except requests.RequestException:
            return None
        return poll_answer(self.client, resp, "progress check", snapshot_id)

    def downloader(self, interval: float) -> Downloader:
        return Downloader(self.client, self.console, V3 + "/snapshot/{id}", V3 + "/snapshot/{id}/parts", interval)


# ---------------------------------------------------------------- polling
def poll_answer(client: Client, resp: requests.Response, what: str, snapshot_id: str) -> dict | None:
    """A status answer's body; None when it is worth polling again (5xx, not JSON)."""
    if resp.status_code >= 500:
        return None
    if resp.status_code != 200:
        raise client.error(resp, what, snapshot_gone(snapshot_id))
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def wait_ready(console: Console, snapshot_id: str, get: Callable[[], dict | None], interval: float, limit: float,
               raw_dir: Path, where: str, records_key: str = "records") -> dict:
    """Poll `get()` (a status body, or None for a transient failure) until `ready`; `failed` and
    a timeout are one-line errors (the snapshot id stays saved for `webtune resume`)."""
    start = time.monotonic()
    columns = (SpinnerColumn(), TextColumn("snapshot {task.fields[id]}"),
               TextColumn("[cyan]{task.fields[status]}"), TimeElapsedColumn(),
               TextColumn("records: {task.fields[records]}"))
    with progress(*columns, console=console) as bar:
        task = bar.add_task("poll", id=snapshot_id, status="…", records="-", total=None)
        unanswered = 0
        while True:
            body = get()
            unanswered = 0 if body else unanswered + 1
            if unanswered >= UNANSWERED_POLLS:
                raise WebtuneError(f"no usable answer from {where} in {UNANSWERED_POLLS} polls (connection errors "
                                   "or 5xx); check source.brightdata.base_url and the network, then resume the run")
            status = str(body.get("status", "?")) if body else "(no answer, retrying)"
            bar.update(task, status=status, records=(body.get(records_key) if body else None) or "-")
            if status == "ready":
                return body
            if status == "failed":
                reason = next((body[k] for k in ("error_message", "error", "message", "failure_reason")
                               if body.get(k)), "no reason given")
                raise WebtuneError(f"Bright Data snapshot {snapshot_id} failed: {reason}; check the inputs "
                                   "(or the filter), then start a new run (it collects a new snapshot)")
            if time.monotonic() - start + interval > limit:
                raise WebtuneError(
                    f"snapshot {snapshot_id} is still {status} after {limit:g}s (source.brightdata.poll_timeout); "
                    f"it keeps running at Bright Data and its id is saved in {raw_dir / STATE_FILE}: "
                    "`webtune resume RUN_DIR` continues it without collecting again")
            time.sleep(interval)


# ---------------------------------------------------------------- Ctrl-C while a collection runs
def _interrupted(scraper: _Scraper, snapshot_id: str, raw_dir: Path, state: dict, console: Console, ask_cancel):
    """Cancel the collection or leave it running, as the user says; always raises WebtuneError."""
    ask = ask_cancel or (lambda sid: _ask_cancel(console, sid))
    if ask(snapshot_id):
        stopped = scraper.cancel(snapshot_id)
        state["cancelled_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        write_json(raw_dir / STATE_FILE, state)
        raise WebtuneError(f"cancelled Bright Data collection {snapshot_id} at your request"
                           + ("" if stopped else " (Bright Data says it had already finished)")
                           + "; records collected before the cancel may still bill")
    raise WebtuneError(f"stopped waiting for Bright Data snapshot {snapshot_id}; it keeps running at Bright Data "
                       f"and its id is saved in {raw_dir / STATE_FILE}: `webtune resume RUN_DIR` continues it "
                       "without collecting again")


def _ask_cancel(console: Console, snapshot_id: str) -> bool:
    """Ask on the terminal; with no terminal the collection is left running."""
    try:
        terminal = sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):       # a closed or replaced stdin
        terminal = False
    if not terminal:
        console.print(f"Interrupted; no terminal to ask, so Bright Data snapshot {snapshot_id} is left running")
        return False
    from rich.prompt import Confirm
    try:
        return Confirm.ask(f"Cancel Bright Data collection {snapshot_id}? (no: leave it running for "
                           "`webtune resume`)", console=console, default=False)
    except (EOFError, KeyboardInterrupt):
        return False


# ---------------------------------------------------------------- config checks and inputs
def _check(cfg) -> str:
    fmt = str(cfg.format).lower()
    if fmt not in FORMATS:
        raise WebtuneError(f"source.brightdata.format={cfg.format!r} is not one of {', '.join(FORMATS)}")
    if str(cfg.get("mode", "auto")) not in MODES:
        raise WebtuneError(f"source.brightdata.mode={cfg.mode!r} is not one of {', '.join(MODES)}")
    return fmt


def _use_sync(cfg, inputs: list[dict]) -> bool:
    mode = str(cfg.get("mode", "auto"))
    if mode == "sync" and len(inputs) > SYNC_MAX_INPUTS:
        raise WebtuneError(f"source.brightdata.mode=sync takes at most {SYNC_MAX_INPUTS} inputs ({len(inputs)} "
                           "given): use mode auto or async")
    return mode == "sync" or (mode == "auto" and len(inputs) <= SYNC_MAX_INPUTS)


def _load_inputs(cfg: DictConfig) -> list[dict]:
    if not cfg.dataset_id:
        raise WebtuneError("source.brightdata.dataset_id is empty: set it (gd_...), e.g. gd_l7q7dkf244hwjntr0 "
                           "for Amazon products")
    inline = OmegaConf.to_container(cfg.inputs, resolve=True) if isinstance(cfg.inputs, ListConfig) \
        else list(cfg.inputs or [])
    if inline and cfg.inputs_file:
        raise WebtuneError("set source.brightdata.inputs or source.brightdata.inputs_file, not both")
    where = [f"source.brightdata.inputs[{i}]" for i in range(len(inline))]
    if cfg.inputs_file:
        inline, where = _read_inputs_file(Path(cfg.inputs_file))
    inputs = []
    for item, at in zip(inline, where):
        if isinstance(item, str):
            item = {"url": item}            # a bare URL is shorthand for {url: ...}
        if not isinstance(item, dict):
            raise WebtuneError(f"{at}: an input must be an object such as {{url: https://...}}, "
                               f"got {type(item).__name__}")
        inputs.append(item)
    if not inputs:
        raise WebtuneError("no Bright Data inputs: set source.brightdata.inputs (a list such as "
                           "[{url: https://...}]) or source.brightdata.inputs_file, or "
                           "source.brightdata.snapshot_id to use a snapshot that exists")
    return inputs


def _read_inputs_file(path: Path) -> tuple[list, list[str]]:
    """A JSON array, or JSONL, of input objects."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WebtuneError(f"source.brightdata.inputs_file {path}: cannot read it ({err.strerror})") from None
    if data.lstrip()[:1] == b"[":
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            raise WebtuneError(f"source.brightdata.inputs_file {path}: not valid JSON ({err})") from None
        return items, [f"{path} item {i + 1}" for i in range(len(items))]
    items, where = [], []
    for n, line in enumerate(data.splitlines(), 1):
        if line.strip():
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as err:
                raise WebtuneError(f"source.brightdata.inputs_file {path} line {n}: not valid JSON ({err})") from None
            where.append(f"{path} line {n}")
    return items, where


def known_snapshot(cfg: DictConfig, state: dict | None, raw_dir: Path) -> str | None:
    given = cfg.snapshot_id
    if given is not None and not SAFE_ID.match(str(given)):
        raise WebtuneError(f"source.brightdata.snapshot_id={given!r} does not look like a snapshot id "
                           "(s_..., sd_..., snap_...)")
    if state and given and state["snapshot_id"] != given:
        raise WebtuneError(f"source.brightdata.snapshot_id={given} but {raw_dir / STATE_FILE} records snapshot "
                           f"{state['snapshot_id']}: use a new run directory for another snapshot")
    return state["snapshot_id"] if state else given


def _is_error_record(obj: dict, primary: list[str]) -> bool:
    if obj.get("error_code"):
        return True
    return bool(obj.get("error")) and not any(obj.get(f) not in (None, "", [], {}) for f in primary)


def _error_detail(obj: dict) -> str:
    given = obj.get("input")
    where = given.get("url") if isinstance(given, dict) and given.get("url") else given
    if not isinstance(where, str):
        where = orjson.dumps(where).decode()[:300] if where is not None else "not given"
    return f"{obj.get('error') or obj.get('error_code')} (input: {where})"
