"""What every Bright Data request shares: the session, the token, one 429 budget, error lines.

429 (docs/contracts/brightdata.md, "Rate limits"): a 429 is a refusal, nothing was created or
billed, so any request (a trigger too) is sent again after a wait: the `Retry-After` seconds when
the answer has them, else `rate_limit_wait` x 1, 2, 4, 8, 16 (2, 4, 8, 16, 32 s by default), at
most 5 times. Bright Data blocks an IP that gets 25 429s within 5 minutes, so the whole process
keeps one count per host over a sliding 5 minutes and stops at 10 (the point Bright Data's own
error page calls "the block is near"), before the block can bite. 5xx and connection errors on
GETs are retried by urllib3; on POSTs that bill they are not retried at all (the caller says why).
"""
from __future__ import annotations

import collections
import email.utils
import re
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from rich.console import Console
from urllib3.util import Retry

from .. import __version__
from ..errors import WebtuneError
from ..redaction import redact, secret_env

USER_AGENT = f"webtune/{__version__} (+https://github.com/webtune/webtune)"
RETRIES_5XX = 3              # per GET, by urllib3 (5xx and connection errors)
RETRIES_429 = 5              # per request: waits of 1, 2, 4, 8, 16 x rate_limit_wait
WINDOW_429 = 300.0           # seconds: Bright Data's block rule is 25 429s per IP in 5 minutes
STOP_429 = 10                # this process stops at 10 in that window, far inside the rule
SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,200}$")      # snapshot ids become file names


class RateLimits:
    """The 429s this process got from each Bright Data host over the last WINDOW_429 seconds."""

    def __init__(self):
        self._seen: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def record(self, host: str) -> int:
        """Count one 429 from `host`; returns how many fell in the window, this one included."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(host, collections.deque())
            seen.append(now)
            while seen and seen[0] < now - WINDOW_429:
                seen.popleft()
            return len(seen)


RATE_LIMITS = RateLimits()      # one for the whole process: every Bright Data request counts


class RequestBudget:
    """At most `per_hour` requests to one host in any hour (the marketplace's 120/hour): waits when spent."""

    _sent: dict[str, collections.deque] = {}
    _lock = threading.Lock()

    def __init__(self, host: str, per_hour: int, console: Console):
        self.host, self.per_hour, self.console = host, max(1, int(per_hour)), console

    def take(self) -> None:
        with self._lock:
            sent = self._sent.setdefault(self.host, collections.deque())
            now = time.monotonic()
            while sent and sent[0] < now - 3600:
                sent.popleft()
            pause = sent[0] + 3600 - now if len(sent) >= self.per_hour else 0.0
        if pause > 0:
            self.console.print(f"Bright Data marketplace budget: {self.per_hour} requests/hour used; "
                               f"waiting {pause:.0f}s (source.brightdata.requests_per_hour)")
            time.sleep(pause)
        with self._lock:
            self._sent[self.host].append(time.monotonic())


class Client:
    """Requests to one Bright Data base URL with the token, the timeouts and the 429 rule."""

    def __init__(self, cfg, token: str, console: Console):
        self.cfg, self.token, self.console = cfg, token, console
        self.base = cfg.base_url.rstrip("/")
        self.host = urlsplit(self.base).netloc
        self.timeout = float(cfg.timeout)
        self.wait_base = float(cfg.get("rate_limit_wait", 2.0))
        gets = _Retry5xx(total=RETRIES_5XX + 3, connect=3, read=2, status=RETRIES_5XX, other=0,
                     allowed_methods={"GET"}, status_forcelist={500, 502, 503, 504},
                     backoff_factor=float(cfg.get("retry_backoff", 2.0)), respect_retry_after_header=True,
                     raise_on_status=False)
        self.session = _session(token, gets)
        self.post_session = _session(token, Retry(total=0, raise_on_status=False))   # a POST may bill

    def request(self, method: str, path: str, what: str, **kwargs) -> requests.Response:
        """One request, sent again after each 429 (see the module's docstring). Connection errors
        propagate as requests.RequestException; every other answer is returned."""
        session = self.session if method == "GET" else self.post_session
        kwargs.setdefault("timeout", self.timeout)
        for attempt in range(RETRIES_429 + 1):
            resp = session.request(method, self.base + path, **kwargs)
            if resp.status_code != 429:
                return resp
            seen = RATE_LIMITS.record(self.host)
            message = body_message(resp)
            if seen >= STOP_429:
                raise WebtuneError(
                    f"Bright Data answered 429 to the {what} ({message}); that is {seen} 429s from {self.host} "
                    f"within 5 minutes, and 25 get the IP blocked: stopped. Wait 5 minutes, then resume the run")
            if attempt == RETRIES_429:
                break
            pause = retry_after(resp)
            pause = self.wait_base * 2 ** attempt if pause is None else pause
            self.console.print(f"Bright Data answered 429 to the {what} ({message}): waiting {pause:g}s, "
                               f"then retry {attempt + 1} of {RETRIES_429}")
            time.sleep(pause)
        raise WebtuneError(f"Bright Data kept answering 429 to the {what} ({message}) after {RETRIES_429} "
                           "waits; wait a few minutes, then resume the run (25 429s in 5 minutes get the IP blocked)")

    def error(self, resp: requests.Response, what: str, not_found: str) -> WebtuneError:
        """One line for a non-2xx answer that no retry will fix."""
        code, msg, env = resp.status_code, body_message(resp), self.cfg.api_key_env
        if code == 400:
            text = f"Bright Data rejected the {what} (400): {msg}"
        elif code == 401:
            text = f"Bright Data refused the API token on the {what} (401: {msg}): check the token in ${env}"
        elif code == 402:
            text = f"the Bright Data account cannot pay for the {what} (402): {msg}; add funds, then run again"
        elif code == 403:
            text = f"Bright Data denied access on the {what} (403: {msg}): check the permissions of ${env}"
        elif code == 404:
            text = f"{not_found} (404: {msg})"
        else:
            text = f"Bright Data answered {code} to the {what}: {msg}"
        return WebtuneError(text)


class _Retry5xx(Retry):
    """urllib3's retry for GETs, minus 429s (Client.request counts and waits those itself)."""

    RETRY_AFTER_STATUS_CODES = frozenset({503})


def retry_after(resp: requests.Response) -> float | None:
    """The Retry-After header in seconds (a number or an HTTP date), or None."""
    value = (resp.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _session(token: str, retry: Retry) -> requests.Session:
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {token}", "User-Agent": USER_AGENT})
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def token(cfg, setting: str = "source.brightdata.api_key_env") -> str:
    value = secret_env(cfg.api_key_env)
    if not value:
        raise WebtuneError(f"the environment variable {cfg.api_key_env} ({setting}) is "
                           "not set: export your Bright Data API token in it")
    return value


def body_message(resp: requests.Response) -> str:
    """The useful part of an answer body: JSON or plain text, never assumed to be JSON; a token it
    echoes is masked."""
    text = resp.text.strip()
    try:
        body = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        errors = body.get("errors") or body.get("validation_errors") or []
        for err in errors if isinstance(errors, list) else [errors]:
            if isinstance(err, (list, tuple)) and len(err) == 2:
                parts.append(f"field {err[0]!r}: {err[1]}")
            else:
                parts.append(str(err))
        if body.get("index") is not None:
            parts.append(f"input index {body['index']}")
        text = "; ".join(parts) or text
    text = redact(" ".join(text.split()))
    return (text[:400] + "…" if len(text) > 400 else text) or (resp.reason or "empty body")


def read_state(path: Path) -> dict | None:
    """A saved snapshot.json, checked, or None when there is none."""
    if not path.exists():
        return None
    try:
        state = orjson.loads(path.read_bytes())
        if not isinstance(state, dict) or not SAFE_ID.match(str(state.get("snapshot_id", ""))):
            raise ValueError("no usable snapshot_id")
    except ValueError as err:
        raise WebtuneError(f"{path} is damaged ({err}); put the snapshot id back in it, or set "
                           "source.brightdata.snapshot_id") from None
    return state


def snapshot_id_of(resp, request: str, not_sent_again: str) -> str:
    """The snapshot id a trigger answered, checked (it becomes a file name); `request` names the call
    in the error, `not_sent_again` says why it is safe to run again."""
    try:
        snapshot_id = resp.json()["snapshot_id"]
    except (ValueError, KeyError, TypeError):
        raise WebtuneError(f"{request} answered {resp.status_code} without a snapshot_id ({body_message(resp)}); "
                           f"{not_sent_again}") from None
    if not isinstance(snapshot_id, str) or not SAFE_ID.match(snapshot_id):
        raise WebtuneError(f"{request} answered an unusable snapshot id {snapshot_id!r}; {not_sent_again}")
    return snapshot_id
