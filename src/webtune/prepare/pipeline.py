"""The prepare stage as map -> reduce -> map, so a distributed engine could run it unchanged.

  map     (one task per shard; `map_shard`)  every shard reads its share of every input
          (`sources.iter_records(..., shard, n_shards)`) and runs parse -> clean -> filter ->
          validate -> render -> validate (chat) on each record, writing
            ledger/prepare/<shard>.jsonl   repairs and rejections (one final event per rejected record)
            tmp/prepare/cand-<shard>.jsonl the surviving records' rendered examples
            tmp/prepare/sig-<shard>.npz    per survivor: its id's order key, exact hash, LSH band hashes
  reduce  (one task; `reduce_signatures`)  loads every shard's signatures (~140 bytes a record),
          puts them in global input order and finds exact and near duplicates across all inputs,
          domain and general alike; the first record of each group is kept.
  map     (`write_outputs`)  streams the candidate files in global order: kept records' examples
          go to data/examples.jsonl and get their `kept` event (with example_ids); duplicates get a
          `rejected` event naming the kept record.

Input order is (input index, then the record id's `<source>:<where>` part as text, then its
`#<n>` number): ids never depend on the shard count (a source contract), so neither does the order,
the keeper of a duplicate group or data/examples.jsonl, which is byte-identical for any number of
workers. For files that is file by file (sorted paths), then line, row or item.

Here the map runs on `prepare.workers` local processes. On a cluster, each step is a plain
function of files: run `map_shard` as N Ray tasks or datatrove executor tasks, then
`reduce_signatures` on one node (its input is small), then the final write.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ..errors import WebtuneError
from ..ledger import LedgerWriter
from ..records import Rejection
from .clean import Cleaner
from .dedupe import Signer, find_duplicates
from .filters import Filters, mask_pii
from .render import load_tasks
from .validate import Invalid, check_chat

BATCH = 2048            # records hashed per numpy/rensa call
MAX_SIGN_CHARS = 200_000  # dedupe looks at most at this much of a text (the rest cannot change the verdict much)


@dataclass
class PrepareInput:
    side: str            # "domain" | "general"
    source: object       # SourceConfig (DictConfig)
    template: object     # TemplateConfig (DictConfig): its tasks
    paths: list[Path]    # from sources.acquire


_NOT_TEXT = {"role", "name", "url", "id"}  # labels inside nested objects (chat messages), not their text


def _strings(value, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for v in value:
            _strings(v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _NOT_TEXT:
                _strings(v, out)


def plain(node):
    """A config node as nested SimpleNamespaces: OmegaConf attribute access costs microseconds, and
    the per-record code reads thresholds millions of times."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return SimpleNamespace(**{k: plain(v) for k, v in node.items()})
    return node


def text_of(fields: dict, names: list[str]) -> str:
    """The text of the named fields (every string in the record when no names are given)."""
    out: list[str] = []
    if names:
        for name in names:
            _strings(fields.get(name), out)
    else:
        _strings(fields, out)
    return "\n".join(out)


class _Timer:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.t = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] += now - self.t
        self.t = now


def map_shard(cfg, run_dir: Path, work: Path, inputs: list[PrepareInput], shard: int, n_shards: int,
              progress=None) -> dict:
    """Everything per record up to dedupe, for one shard of every input. Returns counts and timings."""
    from .. import sources

    p = plain(cfg.prepare)
    cleaner, filters, signer = Cleaner(p.clean), Filters(p.filters), Signer(p.dedupe)
    length_field = p.filters.length_field
    validate_output = bool(p.validate_output)
    counts: dict[str, dict] = {}
    exacts, bands, empties = [], [], []
    keys: list[tuple[int, int, int, int]] = []   # (input, local prefix number, n, offset in cand file)
    prefixes: list[dict[str, int]] = [{} for _ in inputs]
    pending_text: list[str] = []

    def flush():
        if pending_text:
            e, b, m = signer.sign(pending_text)
            exacts.append(e), bands.append(b), empties.append(m)
            pending_text.clear()

    timer = _Timer()
    done = 0
    with LedgerWriter(run_dir, "prepare", part=f"{shard}") as ledger, open(work / f"cand-{shard}.jsonl", "wb") as cand:
        for index, inp in enumerate(inputs):
            tasks = load_tasks(inp.template)
            needed = list(dict.fromkeys(f for t in tasks for f in t.fields))
            dedupe_fields = list(p.dedupe.fields or needed)
            group_field = inp.source.get("group_field")
            source_name = inp.source.name
            c = counts.setdefault(source_name, {"in": 0, "rejected": 0})
            timer.lap("other")
            local = prefixes[index]
            for item in sources.iter_records(inp.source, inp.paths, shard, n_shards):
                timer.lap("parse")
                c["in"] += 1
                done += 1
                if progress is not None and done % 1000 == 0:
                    progress[shard] = done
                if isinstance(item, Rejection):
                    ledger.rejected(item.id, item.source, item.reason, item.detail, step="parse")
                    c["rejected"] += 1
                    continue
                rid, src, fields = item.id, item.source, item.fields
                for reason in item.repairs:
                    ledger.repaired(rid, src, reason, step="parse")
                if "error_code" in fields or ("error" in fields and needed and not any(f in fields for f in needed)):
                    ledger.rejected(rid, src, "error_record", str(fields.get("error") or fields.get("error_code")),
                                    step="parse")
                    c["rejected"] += 1
                    continue
                for reason, names in cleaner.clean(fields).items():
                    ledger.repaired(rid, src, reason, ", ".join(names), step="clean")
                timer.lap("clean")
                # structure first (the fields each task needs, its input schema), then quality
                viable, failures, coerced = [], [], set()
                for task in tasks:
                    try:
                        for repair in task.check(fields):
                            if repair not in coerced:
                                coerced.add(repair)
                                ledger.repaired(rid, src, repair, f"template {task.name}", step="validate")
                        viable.append(task)
                    except Invalid as e:
                        failures.append(e)
                timer.lap("validate")
                if not viable:
                    _reject_failures(ledger, rid, src, failures)
                    c["rejected"] += 1
                    continue
                main = fields.get(length_field) if length_field else None
                text = main if isinstance(main, str) else text_of(fields, dedupe_fields)
                if p.filters.mask_pii:
                    masked = []
                    for name, value in fields.items():
                        if isinstance(value, str):
                            new = mask_pii(value)
                            if new != value:
                                fields[name] = new
                                masked.append(name)
                    if masked:
                        ledger.repaired(rid, src, "pii_masked", ", ".join(masked), step="filter")
                        text = mask_pii(text)
                verdict = filters.check(fields, text)
                timer.lap("filter")
                if verdict is not None:
                    ledger.rejected(rid, src, verdict[0], verdict[1], step="filter")
                    c["rejected"] += 1
                    continue
                examples = []
                for task in viable:
                    try:
                        messages = task.render(fields)
                        if validate_output:
                            check_chat(messages)
                        examples.append((task.name, messages))
                    except Invalid as e:
                        failures.append(e)
                timer.lap("render")
                if not examples:
                    _reject_failures(ledger, rid, src, failures)
                    c["rejected"] += 1
                    continue
                group = item.group or (str(fields[group_field]) if group_field and fields.get(group_field) is not None
                                       else rid)
                ids = [f"{rid}/{name}" for name, _ in examples]
                note = "; ".join(f"{e.reason}: {e.detail}" for e in failures)
                where, _, n = rid.rpartition("#")
                keys.append((index, local.setdefault(where, len(local)), int(n) if n.isdigit() else 0, cand.tell()))
                cand.write(orjson.dumps([rid, src, ids, [name for name, _ in examples], note]) + b"\n")
                for eid, (name, messages) in zip(ids, examples):
                    cand.write(orjson.dumps({"id": eid, "record_id": rid, "source": src, "side": inp.side,
                                             "template": name, "group": group, "messages": messages}) + b"\n")
                timer.lap("write")
                dedupe_text = text_of(fields, dedupe_fields)
                pending_text.append(dedupe_text[:MAX_SIGN_CHARS])
                if len(pending_text) >= BATCH:
                    flush()
                    timer.lap("dedupe")
        flush()
        timer.lap("dedupe")
    if progress is not None:
        progress[shard] = done
    empty = np.zeros(0, dtype=np.uint64)
    (work / f"prefixes-{shard}.json").write_bytes(orjson.dumps([list(d) for d in prefixes]))
    np.savez(work / f"sig-{shard}.npz",
             key=np.array(keys, dtype=np.int64).reshape(-1, 4),
             exact=np.concatenate(exacts) if exacts else empty,
             bands=np.concatenate(bands) if bands else np.zeros((0, signer.bands), dtype=np.uint64),
             empty=np.concatenate(empties) if empties else np.zeros(0, dtype=bool))
    timer.lap("write")
    return {"counts": counts, "seconds": dict(timer.seconds)}


def _order(work: Path, n_shards: int, parts) -> tuple[np.ndarray, np.ndarray]:
    """Global input order of all candidates: (sort permutation, cand-file offsets) from the shards' keys."""
    local_prefixes = [orjson.loads((work / f"prefixes-{s}.json").read_bytes()) for s in range(n_shards)]
    n_inputs = max((len(p) for p in local_prefixes), default=0)
    ranks = []
    for index in range(n_inputs):
        union = sorted({w for p in local_prefixes for w in p[index]})
        ranks.append({w: r for r, w in enumerate(union)})
    sort_keys = []
    for s, part in enumerate(parts):
        key = part["key"]
        if not len(key):
            continue
        # local prefix number -> global rank, per input
        lookup = [np.array([ranks[i][w] for w in local_prefixes[s][i]] or [0], dtype=np.int64)
                  for i in range(n_inputs)]
        rank = np.empty(len(key), dtype=np.int64)
        for i in range(n_inputs):
            mine = key[:, 0] == i
            rank[mine] = lookup[i][key[mine, 1]]
        sort_keys.append(np.stack([key[:, 0], rank, key[:, 2]], axis=1))
    if not sort_keys:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    all_keys = np.concatenate(sort_keys)
    order = np.lexsort((all_keys[:, 2], all_keys[:, 1], all_keys[:, 0]))
    return order, np.concatenate([p["key"][:, 3] for p in parts if len(p["key"])])


def _reject_failures(ledger, rid: str, src: str, failures: list[Invalid]) -> None:
    """No task could use the record: the first task's reason, every task's detail."""
    first = failures[0]
    step = "render" if first.reason in ("missing_field", "render_error") else "validate"
    ledger.rejected(rid, src, first.reason, "; ".join(e.detail for e in failures), step=step)


def reduce_signatures(cfg, work: Path, n_shards: int):
    """Global exact + near dedupe. Returns (shard_of, offset, keeper, first_copy), all in input order."""
    parts = [np.load(work / f"sig-{s}.npz") for s in range(n_shards)]
    order, offsets = _order(work, n_shards, parts)
    shard_of = np.concatenate([np.full(len(x["key"]), s, dtype=np.int32) for s, x in enumerate(parts)])[order]
    offsets = offsets[order]
    n = len(order)
    d = cfg.prepare.dedupe
    if not n or (not d.exact and not d.near):
        return shard_of, offsets, np.arange(n), np.arange(n)
    exact = np.concatenate([x["exact"] for x in parts])[order]
    bands = np.concatenate([x["bands"] for x in parts])[order]
    empty = np.concatenate([x["empty"] for x in parts])[order]
    keeper, first_copy = find_duplicates(exact, bands, empty, bool(d.exact), bool(d.near))
    return shard_of, offsets, keeper, first_copy


def write_outputs(run_dir: Path, work: Path, n_shards: int, shard_of, offsets, keeper, first_copy) -> dict:
    """Kept examples to data/examples.jsonl in input order; the final ledger event of each candidate."""
    out_path = Path(run_dir) / "data" / "examples.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    files = [open(work / f"cand-{s}.jsonl", "rb") for s in range(n_shards)]
    at = [0] * n_shards   # where each file's reader stands: seek only when input order jumps
    kept_counts: dict[str, int] = defaultdict(int)
    dup_counts: dict[str, int] = defaultdict(int)
    per_template: dict[str, int] = defaultdict(int)
    keeper_ids: dict[int, str] = {}
    needed = set(np.unique(keeper[keeper != np.arange(len(keeper))]).tolist())
    try:
        with open(out_path, "wb") as out, LedgerWriter(run_dir, "prepare", part="dedupe") as ledger:
            for i in range(len(keeper)):
                s = int(shard_of[i])
                f = files[s]
                if at[s] != offsets[i]:
                    f.seek(int(offsets[i]))
                header = f.readline()
                rid, src, ids, templates, note = orjson.loads(header)
                examples = [f.readline() for _ in ids]
                at[s] = int(offsets[i]) + len(header) + sum(map(len, examples))
                if i in needed:
                    keeper_ids[i] = rid
                k = int(keeper[i])
                if k == i:
                    out.writelines(examples)
                    ledger.kept(rid, src, detail=note, example_ids=ids, step="dedupe")
                    kept_counts[src] += 1
                    for t in templates:
                        per_template[t] += 1
                else:
                    exact = int(first_copy[i]) != i
                    detail = "same normalised text" if exact else "near-duplicate (MinHash LSH)"
                    if exact and int(first_copy[i]) != k:
                        detail += f" as {keeper_ids.get(int(first_copy[i]), 'an earlier duplicate')}"
                    ledger.rejected(rid, src, "exact_duplicate" if exact else "near_duplicate", detail,
                                    duplicate_of=keeper_ids[k], step="dedupe")
                    dup_counts[src] += 1
    finally:
        for f in files:
            f.close()
    return {"kept": dict(kept_counts), "duplicates": dict(dup_counts), "examples": dict(per_template)}


def _worker(cfg, run_dir, work, inputs, shard, n_shards, progress, results):
    try:
        results.put((shard, "ok", map_shard(cfg, run_dir, work, inputs, shard, n_shards, progress)))
    except WebtuneError as e:
        results.put((shard, "error", str(e)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        import traceback
        results.put((shard, "crash", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def _run_shards(cfg, run_dir: Path, work: Path, inputs, n_shards: int, console) -> list[dict]:
    if n_shards == 1:
        bar = _progress(console)
        try:
            inline = _InlineProgress(bar, bar.add_task("prepare", total=None)) if bar else None
            return [map_shard(cfg, run_dir, work, inputs, 0, 1, inline)]
        finally:
            if bar:
                bar.stop()
    ctx = mp.get_context("spawn")  # no inherited locks or threads from the caller (rich, torch)
    progress = ctx.RawArray("q", n_shards)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cfg, run_dir, work, inputs, s, n_shards, progress, results),
                         name=f"webtune-prepare-{s}", daemon=True) for s in range(n_shards)]
    for proc in procs:
        proc.start()
    out: dict[int, dict] = {}
    bar = _progress(console)
    try:
        inline = _InlineProgress(bar, bar.add_task("prepare", total=None)) if bar else None
        while len(out) < n_shards:
            try:
                shard, status, payload = results.get(timeout=0.2)
            except Exception:  # queue.Empty
                if inline:
                    inline[0] = sum(progress)
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and results.empty():
                    raise WebtuneError(f"prepare worker {dead[0].name} died (exit code {dead[0].exitcode}); "
                                       f"try prepare.workers=1 to see the error") from None
                continue
            if status == "error":
                raise WebtuneError(payload)
            if status == "crash":
                raise RuntimeError(f"prepare worker {shard} crashed: {payload}")
            out[shard] = payload
        if inline:
            inline[0] = sum(progress)
    finally:
        if bar:
            bar.stop()
        for proc in procs:
            if proc.is_alive() and len(out) < n_shards:
                proc.terminate()
            proc.join()
    return [out[s] for s in range(n_shards)]


def _progress(console):
    if console is None:
        return None
    from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=False)
    bar.start()
    return bar


class _InlineProgress:
    """The single-worker path's progress: the map runs in this process, so update the bar directly."""

    def __init__(self, bar, task):
        self.bar, self.task, self.start = bar, task, time.perf_counter()

    def __setitem__(self, shard, done):
        rate = done / max(1e-9, time.perf_counter() - self.start)
        self.bar.update(self.task, completed=done, description=f"prepare: {rate:,.0f} records/s")


def run(cfg, run_dir: Path, inputs: list[PrepareInput], console=None) -> dict:
    """The prepare stage: writes data/examples.jsonl and ledger/prepare/*.jsonl; returns stats."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    workers = int(cfg.prepare.workers or 0) or os.cpu_count() or 1
    work = run_dir / "tmp" / "prepare"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(run_dir / "ledger" / "prepare", ignore_errors=True)
    work.mkdir(parents=True)
    for inp in inputs:  # template errors surface once, here, not once per worker
        load_tasks(inp.template)

    t0 = time.perf_counter()
    shard_stats = _run_shards(cfg, run_dir, work, inputs, workers, console)
    t_map = time.perf_counter() - t0
    t0 = time.perf_counter()
    shard_of, offsets, keeper, first_copy = reduce_signatures(cfg, work, workers)
    t_reduce = time.perf_counter() - t0
    t0 = time.perf_counter()
    final = write_outputs(run_dir, work, workers, shard_of, offsets, keeper, first_copy)
    t_write = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    try:
        (run_dir / "tmp").rmdir()
    except OSError:
        pass

    sources: dict[str, dict] = {}
    for inp in inputs:
        sources.setdefault(inp.source.name, {"side": inp.side, "in": 0, "kept": 0, "rejected": 0})
    step_seconds: dict[str, float] = defaultdict(float)
    for st in shard_stats:
        for name, c in st["counts"].items():
            sources[name]["in"] += c["in"]
            sources[name]["rejected"] += c["rejected"]
        for step, s in st["seconds"].items():
            step_seconds[step] += s
    for name, n in final["kept"].items():
        sources[name]["kept"] += n
    for name, n in final["duplicates"].items():
        sources[name]["rejected"] += n
    for name, c in sources.items():
        if c["in"] != c["kept"] + c["rejected"]:
            raise WebtuneError(f"prepare: source {name!r} does not reconcile ({c['in']} in, {c['kept']} kept, "
                               f"{c['rejected']} rejected); this is a bug, please report it")
    total = time.perf_counter() - started
    n_in = sum(c["in"] for c in sources.values())
    return {
        "sources": sources,
        "examples": final["examples"],
        "duplicates": sum(final["duplicates"].values()),
        "workers": workers,
        "seconds": {"total": round(total, 3), "map": round(t_map, 3), "reduce": round(t_reduce, 3),
                    "write": round(t_write, 3)},
        "worker_seconds": {k: round(v, 3) for k, v in sorted(step_seconds.items())},
        "records_per_s": round(n_in / total, 1) if total > 0 else None,
    }
