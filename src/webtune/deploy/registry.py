"""A versioned model registry in a plain directory.

    <registry>/<name>/v<N>/model/            the HF model (hard-linked from RUN/model/ where possible)
                         exports/, exports.json  `webtune export` artefacts and their checks
                         openai_model.json   or the OpenAI fine-tuned model id
                         metrics.json        RUN/metrics.json at registration
                         source.json         run dir, config hash, when
    <registry>/<name>/current.json           the serving pointer: version, rollback stack, seq
    <registry>/<name>/history.jsonl          one line per promote/rollback, with the same seq

Every change happens under an fcntl lock on `<name>/.lock`. The commit point of a promote or
rollback is one `os.replace` of current.json; the history line is appended right after, and if a
crash lands between the two, the next locked call appends the missing line from current.json
(which carries everything the line needs). So a reader sees the old pointer or the new one, never
a half-state, and the history never disagrees with the pointer once anyone touches the registry.
A new version is built in a temporary directory and renamed into place, for the same reason.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from webtune.errors import WebtuneError
from webtune.fileio import atomic_path, atomic_write_bytes, link_or_copy, sha256_file

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TARGET_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*?)(?:@v?(?P<version>\d+))?$")


def _failpoint(step: str) -> None:
    """Crash here (SIGKILL, no cleanup) when WEBTUNE_REGISTRY_FAILPOINT names this step; the
    crash-safety tests use it to stop a real process between two steps."""
    if os.environ.get("WEBTUNE_REGISTRY_FAILPOINT") == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _model_dir(registry: str | Path, name: str) -> Path:
    if not NAME_RE.match(name):
        raise WebtuneError(f"model name {name!r} is not valid: use letters, digits, '.', '_' and '-'")
    return Path(registry) / name


@contextlib.contextmanager
def _locked(mdir: Path) -> Iterator[None]:
    mdir.mkdir(parents=True, exist_ok=True)
    with open(mdir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel even if the process is killed
        try:
            _recover(mdir)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json_atomic(path: Path, data: Any, failpoint: Optional[str] = None) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
        if failpoint:
            _failpoint(failpoint)


def _read_history(mdir: Path) -> list[dict]:
    path = mdir / "history.jsonl"
    if not path.exists():
        return []
    lines = path.read_bytes().split(b"\n")
    out = []
    for line in lines:
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line from a crash mid-append; _recover cuts it off
    return out


def _recover(mdir: Path) -> None:
    """Bring history.jsonl in line with current.json after a crash (called under the lock)."""
    path = mdir / "history.jsonl"
    history = _read_history(mdir)
    good = b"".join(json.dumps(h).encode() + b"\n" for h in history)
    if path.exists() and path.read_bytes() != good:
        atomic_write_bytes(path, good)
    cur = read_current(mdir.parent, mdir.name)
    last_seq = history[-1]["seq"] if history else 0
    if cur is not None and cur["seq"] > last_seq:
        _append_history(mdir, _history_entry(cur))
    for tmp in mdir.glob(".*.tmp"):  # pointer files a crash left unrenamed (writes hold the lock)
        tmp.unlink(missing_ok=True)
    for tmp in mdir.glob(".tmp-*"):  # versions whose copying process died
        if not _alive(int(tmp.name.split("-")[1])):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _history_entry(cur: dict) -> dict:
    return {k: cur[k] for k in ("seq", "action", "version", "from", "at", "forced")}


def _append_history(mdir: Path, entry: dict) -> None:
    with open(mdir / "history.jsonl", "a") as fh:
        fh.write(json.dumps(entry) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _versions(mdir: Path) -> list[int]:
    return sorted(int(p.name[1:]) for p in mdir.glob("v*") if p.is_dir() and p.name[1:].isdigit())


def find_openai_model(model_src: Path) -> Optional[dict]:
    """The OpenAI model record in a model directory: `openai_model.json` (written by the openai
    backend on success), else any JSON holding `fine_tuned_model`. `model` is the model id."""
    candidates = [model_src / "openai_model.json"] + sorted(model_src.glob("*.json"))
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        model = isinstance(data, dict) and (data.get("fine_tuned_model") or
                                            (path.name == "openai_model.json" and data.get("model")))
        if model:
            return {**data, "model": model}
    return None


def register(registry: str | Path, name: str, run_dir: str | Path) -> int:
    """Copy RUN/model (hard links where possible), RUN/metrics.json and the run's provenance into
    a new version `<name>/v<N>/`; returns N."""
    mdir = _model_dir(registry, name)
    run = Path(run_dir).resolve()
    model_src = run / "model"
    if not model_src.is_dir():
        raise WebtuneError(f"{run}: no model/ directory; train the run first (or point at a run directory)")
    is_hf = (model_src / "config.json").exists() or (model_src / "adapter_config.json").exists()
    openai_model = None if is_hf else find_openai_model(model_src)
    if not is_hf and openai_model is None:
        raise WebtuneError(f"{model_src}: neither an HF model (config.json, adapter_config.json) nor an "
                           f"OpenAI job file (a JSON with fine_tuned_model)")
    mdir.mkdir(parents=True, exist_ok=True)
    tmp = mdir / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    if is_hf:
        shutil.copytree(model_src, tmp / "model", copy_function=lambda src, dst: link_or_copy(Path(src), Path(dst)))
    else:
        (tmp / "openai_model.json").write_text(json.dumps(openai_model, indent=2))
    metrics = run / "metrics.json"
    (tmp / "metrics.json").write_text(metrics.read_text() if metrics.exists() else "{}")
    config = run / "config.yaml"
    manifest = run / "manifest.json"
    source = {
        "run_dir": str(run),
        "config_hash": sha256_file(config) if config.exists() else None,
        "git_commit": json.loads(manifest.read_text()).get("git_commit") if manifest.exists() else None,
        "kind": "hf" if is_hf else "openai",
        "registered_at": _now(),
    }
    (tmp / "source.json").write_text(json.dumps(source, indent=2))
    _failpoint("register:copied")
    with _locked(mdir):
        versions = _versions(mdir)
        version = (versions[-1] if versions else 0) + 1
        os.rename(tmp, mdir / f"v{version}")
    return version


def record_refresh(registry: str | Path, name: str, decision: dict) -> None:
    """A `webtune refresh` decision, promoted or kept, with its evidence: `<name>/refreshes.jsonl`
    (the serving history stays one line per pointer move)."""
    mdir = _model_dir(registry, name)
    with _locked(mdir):
        with open(mdir / "refreshes.jsonl", "a") as fh:
            fh.write(json.dumps({"at": _now(), **decision}, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_refreshes(mdir: Path) -> list[dict]:
    path = mdir / "refreshes.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def promoted_model_folder(registry: str | Path, name: str, what: str = "eval.compare_to") -> str:
    """The local model folder of the version of `name` the registry serves (what evaluate scores as
    the promoted model); one line naming `what` when there is none."""
    cur = read_current(registry, name)
    if cur is None:
        raise WebtuneError(f"{what}={name}: {name} has no promoted version in registry {registry} "
                           f"(`webtune models show {name}`)")
    folder = Path(registry) / name / f"v{cur['version']}" / "model"
    if not (folder / "config.json").exists() and not (folder / "adapter_config.json").exists():
        raise WebtuneError(f"{what}={name}: {folder} is not a local model (an OpenAI model cannot be scored on "
                           f"held-out loss)")
    return str(folder)


def read_current(registry: str | Path, name: str) -> Optional[dict]:
    """The serving pointer (lock-free: current.json is only ever replaced whole), or None."""
    path = Path(registry) / name / "current.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _version_info(vdir: Path) -> dict:
    def load(fname: str) -> dict:
        p = vdir / fname
        return json.loads(p.read_text()) if p.exists() else {}
    info = {"version": int(vdir.name[1:]), "path": str(vdir), "metrics": load("metrics.json"),
            "source": load("source.json")}
    if (vdir / "openai_model.json").exists():
        info["openai_model"] = load("openai_model.json")["model"]
    if (vdir / "exports.json").exists():
        info["exports"] = load("exports.json")["exports"]
    return info


def record_export(vdir: Path, entry: dict) -> None:
    """List an export (`webtune export`) beside its version in `v<N>/exports.json`; a new export of
    the same format and quantization replaces the old entry."""
    with _locked(vdir.parent):
        path = vdir / "exports.json"
        exports = json.loads(path.read_text())["exports"] if path.exists() else []
        exports = [e for e in exports if (e["format"], e.get("quant")) != (entry["format"], entry.get("quant"))]
        _write_json_atomic(path, {"exports": exports + [entry]})


def list_models(registry: str | Path) -> list[dict]:
    """[{name, versions, current}] for every model in the registry."""
    root = Path(registry)
    if not root.is_dir():
        return []
    out = []
    for mdir in sorted(p for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name)):
        with _locked(mdir):
            cur = read_current(root, mdir.name)
            out.append({"name": mdir.name, "versions": _versions(mdir),
                        "current": cur["version"] if cur else None})
    return out


def show(registry: str | Path, name: str) -> dict:
    """Everything about one model: its versions (metrics, source), the pointer and the history."""
    mdir = _model_dir(registry, name)
    if not mdir.is_dir():
        raise WebtuneError(f"no model {name!r} in registry {registry}; `webtune models list` shows them")
    with _locked(mdir):
        return {"name": name, "current": read_current(registry, name), "history": _read_history(mdir),
                "refreshes": read_refreshes(mdir),
                "versions": [_version_info(mdir / f"v{v}") for v in _versions(mdir)]}


def _eval_gate(name: str, vdir: Path) -> None:
    metrics = json.loads((vdir / "metrics.json").read_text())
    verdict = metrics.get("eval") if isinstance(metrics, dict) else None
    if not isinstance(verdict, dict) or "passed" not in verdict:
        raise WebtuneError(f"{name} {vdir.name}: metrics.json has no eval verdict (eval.passed); run the "
                           f"evaluate stage, or promote with --force")
    if verdict.get("status") == "unverified":
        raise WebtuneError(f"{name} {vdir.name}: unverified (no held-out loss and no judge verdict); evaluate it "
                           f"with the judge (`webtune eval RUN eval.judge.enabled=true`), or promote with --force")
    if verdict.get("status") == "inconclusive":   # an interval too wide to decide shows nothing either
        undecided = "; ".join(str(u) for u in verdict.get("undecided") or []) or "an interval too wide to decide"
        raise WebtuneError(f"{name} {vdir.name}: inconclusive ({undecided}); score more held-out items "
                           f"(`webtune eval RUN eval.max_examples=N`), or promote with --force")
    if not verdict["passed"]:
        flags = ", ".join(str(f) for f in verdict.get("flags") or []) or "no flags given"
        raise WebtuneError(f"{name} {vdir.name}: eval thresholds not met ({flags}); promote with --force "
                           f"to override")


def _move_pointer(registry: str | Path, name: str, mdir: Path, action: str, version: int,
                  stack: list[int], forced: bool) -> dict:
    cur = read_current(registry, name)
    new = {"version": version, "stack": stack, "seq": (cur["seq"] if cur else 0) + 1, "action": action,
           "from": cur["version"] if cur else None, "at": _now(), "forced": forced}
    _write_json_atomic(mdir / "current.json", new, failpoint=f"{action}:tmp-written")
    _failpoint(f"{action}:replaced")
    _append_history(mdir, _history_entry(new))
    return new


def promote(registry: str | Path, name: str, version: int, force: bool = False) -> dict:
    """Point serving at `version`. Refuses (one line) if its eval thresholds did not pass,
    unless `force`. Returns the new pointer."""
    mdir = _model_dir(registry, name)
    vdir = mdir / f"v{version}"
    if not vdir.is_dir():
        raise WebtuneError(f"{name} has no version v{version} (versions: "
                           f"{', '.join(f'v{v}' for v in _versions(mdir)) or 'none'})")
    if not force:
        _eval_gate(name, vdir)
    with _locked(mdir):
        if not vdir.is_dir():  # deleted while we waited for the lock
            raise WebtuneError(f"{name} v{version} was deleted")
        cur = read_current(registry, name)
        if cur and cur["version"] == version:
            return cur
        stack = (cur["stack"] if cur else []) + [version]
        return _move_pointer(registry, name, mdir, "promote", version, stack, force)


def rollback(registry: str | Path, name: str) -> dict:
    """Point serving back at the version promoted before the current one. Returns the new pointer."""
    mdir = _model_dir(registry, name)
    with _locked(mdir):
        cur = read_current(registry, name)
        if cur is None or len(cur["stack"]) < 2:
            raise WebtuneError(f"{name}: no earlier promoted version to roll back to")
        stack = cur["stack"][:-1]
        if not (mdir / f"v{stack[-1]}").is_dir():
            raise WebtuneError(f"{name}: the previous version v{stack[-1]} was deleted; promote a version instead")
        return _move_pointer(registry, name, mdir, "rollback", stack[-1], stack, False)


def delete(registry: str | Path, name: str, version: Optional[int] = None, force: bool = False) -> None:
    """Delete one version, or the whole model when `version` is None. The serving version is only
    deleted with `force` (deleting it takes the model out of service)."""
    mdir = _model_dir(registry, name)
    if not mdir.is_dir():
        raise WebtuneError(f"no model {name!r} in registry {registry}")
    with _locked(mdir):
        cur = read_current(registry, name)
        if version is None:
            if cur and not force:
                raise WebtuneError(f"{name} is serving v{cur['version']}; delete it with --force")
            for child in mdir.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        else:
            vdir = mdir / f"v{version}"
            if not vdir.is_dir():
                raise WebtuneError(f"{name} has no version v{version}")
            if cur and cur["version"] == version and not force:
                raise WebtuneError(f"{name} v{version} is serving; promote another version first, or --force")
            shutil.rmtree(vdir)
    if version is None:
        shutil.rmtree(mdir, ignore_errors=True)


def resolve(registry: str | Path, target: str) -> Path:
    """`NAME` (the promoted version, else the newest) or `NAME@vN` -> that version's directory."""
    m = TARGET_RE.match(target)
    if not m:
        raise WebtuneError(f"{target!r} is not NAME or NAME@vN")
    mdir = _model_dir(registry, m["name"])
    versions = _versions(mdir) if mdir.is_dir() else []
    if not versions:
        raise WebtuneError(f"no model {m['name']!r} in registry {registry}; `webtune models list` shows them")
    if m["version"]:
        version = int(m["version"])
        if version not in versions:
            raise WebtuneError(f"{m['name']} has no version v{version} (versions: "
                               f"{', '.join(f'v{v}' for v in versions)})")
    else:
        cur = read_current(registry, m["name"])
        version = cur["version"] if cur else versions[-1]
    return mdir / f"v{version}"
