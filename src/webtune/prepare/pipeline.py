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
  map     (one task per shard; `finish_shard`)  streams its candidates in input order: kept
          records' examples go to tmp/prepare/examples-<shard>.jsonl with their `kept` event (and
          example_ids), duplicates get a `rejected` event naming the kept record
          (ledger/prepare/dedupe-<shard>.jsonl). `assemble` concatenates the parts into
          data/examples.jsonl (or merges them, when a source deals records out round-robin).

Input order is (input index, then the record id's `<source>:<where>` part as text, then its
`#<n>` number): ids never depend on the shard count (a source contract), so neither does the order,
the keeper of a duplicate group or data/examples.jsonl, which is byte-identical for any number of
workers. For files that is file by file (sorted paths), then line, row or item.

`prepare.executor=local` runs the maps on `prepare.workers` local processes (`run_local`);
`prepare.executor=ray` runs the same functions on Ray Data (executors/ray_data.py), its groupby
handing the colliding groups to the same `dedupe.keepers`. Either way `order_ledger` leaves the
ledger events in input order, so data/examples.jsonl and ledger.jsonl are the same bytes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
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
from .dedupe import Signer, collisions, keepers, pool_started
from .filters import Filters, mask_pii, prose_view
from .words import analyse
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


@dataclass
class Setup:
    """What a map worker builds once (on Ray, once per actor) and reuses for every shard it maps."""

    p: object                # cfg.prepare as plain namespaces
    cleaner: Cleaner
    filters: Filters
    signer: Signer
    tasks: list              # per input: its template's tasks


def setup(cfg, inputs: list[PrepareInput]) -> Setup:
    p = plain(cfg.prepare)
    return Setup(p, Cleaner(p.clean), Filters(p.filters), Signer(p.dedupe), [load_tasks(i.template) for i in inputs])


def map_shard(cfg, run_dir: Path, work: Path, inputs: list[PrepareInput], shard: int, n_shards: int,
              progress=None, ready: Setup | None = None) -> dict:
    """Everything per record up to dedupe, for one shard of every input. Returns counts and timings."""
    from .. import sources

    ready = ready or setup(cfg, inputs)
    p, cleaner, filters, signer = ready.p, ready.cleaner, ready.filters, ready.signer
    length_field = p.filters.length_field
    validate_output = bool(p.validate_output)
    counts: dict[str, dict] = {}
    exacts, bands, empties = [], [], []
    keys: list[tuple[int, int, int, int, int]] = []  # (input, local prefix number, n, cand offset, examples)
    prefixes: list[dict[str, int]] = [{} for _ in inputs]
    # records that passed everything per record wait here for the batched word filters and hashing
    pending: list[tuple] = []

    def flush(ledger, cand, cand_ids):
        if not pending:
            return
        filter_texts = [x[-2] for x in pending]
        dedupe_texts = [x[-1] for x in pending]
        words = analyse(filter_texts) if filters.need_words else None
        verdicts = filters.check_words(words) if words is not None else [None] * len(pending)
        timer.lap("filter")
        same = words is not None and all(a is b for a, b in zip(filter_texts, dedupe_texts))
        e, b, m = signer.sign(dedupe_texts, words if same else None)
        timer.lap("dedupe")
        keep = np.array([v is None for v in verdicts], dtype=bool)
        for (counter, rid, src, key, header, lines, _, _), verdict in zip(pending, verdicts):
            if verdict is not None:
                ledger.rejected(rid, src, verdict[0], verdict[1], step="filter")
                counter["rejected"] += 1
                continue
            keys.append(key + (cand.tell(), len(lines)))
            cand_ids.write(rid.encode() + b"\n")
            cand.write(header)
            cand.writelines(lines)
        exacts.append(e[keep]), bands.append(b[keep]), empties.append(m[keep])
        pending.clear()
        timer.lap("write")

    timer = _Timer()
    done = 0
    with LedgerWriter(run_dir, "prepare", part=f"{shard}") as ledger, \
            open(work / f"cand-{shard}.jsonl", "wb") as cand, open(work / f"ids-{shard}.txt", "wb") as cand_ids:
        for index, inp in enumerate(inputs):
            tasks = ready.tasks[index]
            needed = list(dict.fromkeys(f for t in tasks for f in t.fields))
            dedupe_fields = list(p.dedupe.fields or needed)
            clean_fields = _fields_to_clean(tasks, length_field, dedupe_fields)
            same_text = bool(length_field) and dedupe_fields == [length_field]  # filters and dedupe read one text
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
                for reason, names in cleaner.clean(fields, clean_fields).items():
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
                judged = prose_view(fields, text)   # a page's prose: its markup and code are no "symbols"
                verdict = filters.check_record(fields, judged)
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
                key = (index, local.setdefault(where, len(local)), int(n) if n.isdigit() else 0)
                header = orjson.dumps([rid, src, ids, [name for name, _ in examples], note]) + b"\n"
                lines = [orjson.dumps({"id": eid, "record_id": rid, "source": src, "side": inp.side,
                                       "template": name, "group": group, "messages": messages}) + b"\n"
                         for eid, (name, messages) in zip(ids, examples)]
                dedupe_text = text if same_text else text_of(fields, dedupe_fields)
                if len(dedupe_text) > MAX_SIGN_CHARS:
                    dedupe_text = dedupe_text[:MAX_SIGN_CHARS]
                pending.append((c, rid, src, key, header, lines, judged, dedupe_text))
                timer.lap("write")
                if len(pending) >= BATCH:
                    flush(ledger, cand, cand_ids)
        flush(ledger, cand, cand_ids)
    if progress is not None:
        progress[shard] = done
    empty = np.zeros(0, dtype=np.uint64)
    (work / f"prefixes-{shard}.json").write_bytes(orjson.dumps([list(d) for d in prefixes]))
    np.savez(work / f"sig-{shard}.npz",
             key=np.array(keys, dtype=np.int64).reshape(-1, 5),
             exact=np.concatenate(exacts) if exacts else empty,
             bands=np.concatenate(bands) if bands else np.zeros((0, signer.bands), dtype=np.uint64),
             empty=np.concatenate(empties) if empties else np.zeros(0, dtype=bool))
    timer.lap("write")
    return {"counts": counts, "seconds": dict(timer.seconds)}


def _order(work: Path, n_shards: int, parts) -> np.ndarray:
    """Global input order: the permutation that sorts all shards' candidates (concatenated) by id."""
    local_prefixes = [orjson.loads((work / f"prefixes-{s}.json").read_bytes()) for s in range(n_shards)]
    n_inputs = max((len(p) for p in local_prefixes), default=0)
    ranks = []
    for index in range(n_inputs):
        union = sorted({w for p in local_prefixes for w in p[index]})
        ranks.append({w: r for r, w in enumerate(union)})
    sort_keys = []
    for s, part in enumerate(parts):
        key = part["key"]
        rank = np.zeros(len(key), dtype=np.int64)
        for i in range(n_inputs):  # local prefix number -> global rank, per input
            lookup = np.array([ranks[i][w] for w in local_prefixes[s][i]] or [0], dtype=np.int64)
            mine = key[:, 0] == i
            rank[mine] = lookup[key[mine, 1]]
        sort_keys.append(np.stack([key[:, 0], rank, key[:, 2]], axis=1))
    all_keys = np.concatenate(sort_keys) if sort_keys else np.zeros((0, 3), dtype=np.int64)
    return np.lexsort((all_keys[:, 2], all_keys[:, 1], all_keys[:, 0]))


@dataclass
class Plan:
    """The reduce's verdict, one entry per candidate in global input order."""

    shard: np.ndarray        # which shard holds it
    row: np.ndarray          # its row in that shard's candidate files
    offset: np.ndarray       # byte offset of its header in cand-<shard>.jsonl
    n_examples: np.ndarray
    keeper: np.ndarray       # global index of the record kept for its group (itself when kept)
    first_copy: np.ndarray   # global index of the first record with the same normalised text


def reduce_signatures(cfg, work: Path, n_shards: int, gather=None) -> Plan:
    """Global exact + near dedupe over every shard of every input. The colliding groups come from
    numpy here, or from `gather(position)` (the Ray executor's groupby), where position(shard, row)
    is a candidate's global input position; `keepers` decides either way."""
    parts = [np.load(work / f"sig-{s}.npz") for s in range(n_shards)]
    order = _order(work, n_shards, parts)
    key = np.concatenate([x["key"] for x in parts])[order]
    shard = np.concatenate([np.full(len(x["key"]), s, dtype=np.int64) for s, x in enumerate(parts)])[order]
    row = np.concatenate([np.arange(len(x["key"])) for x in parts])[order]
    n = len(order)
    d = cfg.prepare.dedupe
    keeper = first_copy = np.arange(n)
    if n and (d.exact or d.near):
        if gather is None:
            cat = lambda name: np.concatenate([x[name] for x in parts])[order]  # noqa: E731
            groups = collisions(cat("exact"), cat("bands"), cat("empty"), bool(d.near))
        else:
            position = np.empty(n, dtype=np.int64)
            position[order] = np.arange(n)
            first_row = np.cumsum([0] + [len(x["key"]) for x in parts])
            groups = gather(lambda s, r: position[first_row[s] + r])
        keeper, first_copy = keepers(n, *groups, bool(d.exact), bool(d.near))
    return Plan(shard, row, key[:, 3], key[:, 4], keeper, first_copy)


def _keeper_ids(work: Path, plan: Plan) -> dict[int, str]:
    """Ids of the records that duplicates name (the kept one, the first exact copy)."""
    dup = plan.keeper != np.arange(len(plan.keeper))
    wanted = np.unique(np.concatenate([plan.keeper[dup], plan.first_copy[dup]]))
    out = {}
    for s in np.unique(plan.shard[wanted]):
        lines = (work / f"ids-{s}.txt").read_bytes().split(b"\n")
        for g in wanted[plan.shard[wanted] == s]:
            out[int(g)] = lines[plan.row[g]].decode()
    return out


def finish_shard(run_dir: Path, work: Path, shard: int, plan: Plan, names: dict[int, str]) -> dict:
    """Second map: this shard's kept examples (in input order) and every candidate's final event."""
    mine = np.flatnonzero(plan.shard == shard)
    kept: dict[str, int] = defaultdict(int)
    dups: dict[str, int] = defaultdict(int)
    per_template: dict[str, int] = defaultdict(int)
    at = 0
    with open(work / f"cand-{shard}.jsonl", "rb") as f, open(work / f"examples-{shard}.jsonl", "wb") as out, \
            LedgerWriter(run_dir, "prepare", part=f"dedupe-{shard}") as ledger:
        for i in mine.tolist():
            offset = int(plan.offset[i])
            if offset != at:  # only when a source deals records out of id order
                f.seek(offset)
            header = f.readline()
            rid, src, ids, templates, note = orjson.loads(header)
            examples = [f.readline() for _ in ids]
            at = offset + len(header) + sum(map(len, examples))
            k, first = int(plan.keeper[i]), int(plan.first_copy[i])
            if k == i:
                out.writelines(examples)
                ledger.kept(rid, src, detail=note, example_ids=ids, step="dedupe")
                kept[src] += 1
                for t in templates:
                    per_template[t] += 1
            else:
                exact = first != i
                detail = "same normalised text" if exact else "near-duplicate (MinHash LSH)"
                if exact and first != k:
                    detail += f" as {names[first]}"
                ledger.rejected(rid, src, "exact_duplicate" if exact else "near_duplicate", detail,
                                duplicate_of=names[k], step="dedupe")
                dups[src] += 1
    return {"kept": dict(kept), "duplicates": dict(dups), "examples": dict(per_template)}


def assemble(run_dir: Path, work: Path, n_shards: int, plan: Plan) -> None:
    """data/examples.jsonl from the shards' parts: a concatenation when each shard holds one block of
    the input order (byte-range sharding), else a merge in input order."""
    out_path = Path(run_dir) / "data" / "examples.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kept = plan.keeper == np.arange(len(plan.keeper))
    shard_seq = plan.shard[kept]
    changes = np.flatnonzero(np.diff(shard_seq)) + 1
    blocks = shard_seq[np.concatenate(([0], changes))] if len(shard_seq) else np.zeros(0, dtype=np.int64)
    with open(out_path, "wb") as out:
        if len(set(blocks.tolist())) == len(blocks):
            for s in blocks.tolist():
                with open(work / f"examples-{s}.jsonl", "rb") as part:
                    shutil.copyfileobj(part, out, 1 << 22)
            return
        parts = [open(work / f"examples-{s}.jsonl", "rb") for s in range(n_shards)]
        try:
            for s, n in zip(shard_seq.tolist(), plan.n_examples[kept].tolist()):
                for _ in range(n):
                    out.write(parts[s].readline())
        finally:
            for part in parts:
                part.close()


def _worker(fn, args, shard, progress, results):
    try:
        results.put((shard, "ok", fn(*args, progress) if progress is not None else fn(*args)))
    except WebtuneError as e:
        results.put((shard, "error", str(e)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        import traceback
        results.put((shard, "crash", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def _in_processes(fn, shard_args: list[tuple], console=None, with_progress: bool = False) -> list[dict]:
    """fn(*shard_args[s]) for every shard s, one process each (in this process when there is one)."""
    n = len(shard_args)
    bar = _progress(console) if with_progress else None
    try:
        inline = _InlineProgress(bar, bar.add_task("prepare", total=None)) if bar else None
        if n == 1:
            return [fn(*shard_args[0], inline) if with_progress else fn(*shard_args[0])]
        ctx = mp.get_context(_start_method())
        progress = ctx.RawArray("q", n) if with_progress else None
        results = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(fn, args, s, progress, results), name=f"webtune-prepare-{s}",
                             daemon=True) for s, args in enumerate(shard_args)]
        for proc in procs:
            proc.start()
        out: dict[int, dict] = {}
        try:
            while len(out) < n:
                try:
                    shard, status, payload = results.get(timeout=0.2)
                except queue.Empty:
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
            for proc in procs:
                if proc.is_alive() and len(out) < n:
                    proc.terminate()
                proc.join()
        return [out[s] for s in range(n)]
    finally:
        if bar:
            bar.stop()


def _start_method() -> str:
    """fork: workers start in milliseconds with everything imported, and callers need no
    `if __name__ == "__main__"` guard (the progress thread starts only after the fork); but not
    from a process that already hashed with rensa (a sweep, a second run): its thread pool does not
    survive a fork, so those get a fresh forkserver."""
    methods = mp.get_all_start_methods()
    if "fork" in methods and not pool_started():
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _fields_to_clean(tasks, length_field, dedupe_fields) -> list[str] | None:
    """By default clean what the examples, filters and dedupe read; every field if a template's
    variables cannot be known (it includes another file)."""
    if any(t.variables is None for t in tasks):
        return None
    names = [f for t in tasks for f in sorted(t.variables) + t.fields] + dedupe_fields
    return list(dict.fromkeys(names + ([length_field] if length_field else [])))


def _reject_failures(ledger, rid: str, src: str, failures: list[Invalid]) -> None:
    """No task could use the record: the first task's reason, every task's detail."""
    first = failures[0]
    step = "render" if first.reason in ("missing_field", "render_error") else "validate"
    ledger.rejected(rid, src, first.reason, "; ".join(e.detail for e in failures), step=step)


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


@dataclass
class Outcome:
    """What an executor hands back: the shards' map and write stats, the reduce's plan, timings."""

    shards: int
    workers: int
    mapped: list[dict]
    plan: Plan
    finals: list[dict]
    seconds: dict[str, float]
    extra: dict


def run_local(cfg, run_dir: Path, work: Path, inputs: list[PrepareInput], console=None) -> Outcome:
    """The map / reduce / map on `prepare.workers` local processes, one shard each."""
    workers = int(cfg.prepare.workers or 0) or os.cpu_count() or 1
    seconds = {}
    t0 = time.perf_counter()
    mapped = _in_processes(map_shard, [(cfg, run_dir, work, inputs, s, workers) for s in range(workers)],
                           console, with_progress=True)
    seconds["map"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = reduce_signatures(cfg, work, workers)
    names = _keeper_ids(work, plan)
    seconds["reduce"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    finals = _in_processes(finish_shard, [(run_dir, work, s, plan, names) for s in range(workers)])
    seconds["write"] = time.perf_counter() - t0
    return Outcome(workers, workers, mapped, plan, finals, seconds, {})


def executor_name(cfg) -> str:
    name = cfg.prepare.get("executor") or "local"
    return str(getattr(name, "value", name))  # a str or an Enum member


def _executor(cfg):
    name = executor_name(cfg)
    if name == "local":
        return run_local
    if name == "ray":
        from .executors.ray_data import run_ray
        return run_ray
    raise WebtuneError(f"prepare.executor={name!r}: use local or ray")


def order_ledger(run_dir: Path, inputs: list[PrepareInput], n_shards: int) -> None:
    """The shards' ledger parts as one ledger/prepare/events.jsonl in input order (a record's own
    events in the order they happened), so ledger.jsonl does not depend on the shard count or engine."""
    folder = Path(run_dir) / "ledger" / "prepare"
    parts = [folder / f"{kind}{s}.jsonl" for kind in ("", "dedupe-") for s in range(n_shards)]
    index: dict[str, int] = {}
    for i, inp in enumerate(inputs):
        index.setdefault(inp.source.name, i)
    events = []
    for path in parts:
        with open(path, "rb") as fh:
            for line in fh:
                ev = orjson.loads(line)
                where, _, n = ev["id"].rpartition("#")
                events.append(((index.get(ev["source"], len(index)), where, int(n) if n.isdigit() else 0), line))
    events.sort(key=lambda e: e[0])  # stable: ties keep the map's events before the write's
    tmp = folder / "events.jsonl.tmp"
    with open(tmp, "wb") as out:
        out.writelines(line for _, line in events)
    for path in parts:
        path.unlink()
    tmp.rename(folder / "events.jsonl")


def run(cfg, run_dir: Path, inputs: list[PrepareInput], console=None) -> dict:
    """The prepare stage: writes data/examples.jsonl and ledger/prepare/events.jsonl; returns stats."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    work = run_dir / "tmp" / "prepare"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(run_dir / "ledger" / "prepare", ignore_errors=True)
    work.mkdir(parents=True)
    for inp in inputs:  # template errors surface once, here, not once per worker
        load_tasks(inp.template)
    done = _executor(cfg)(cfg, run_dir, work, inputs, console)
    t0 = time.perf_counter()
    assemble(run_dir, work, done.shards, done.plan)
    order_ledger(run_dir, inputs, done.shards)
    done.seconds["write"] = done.seconds.get("write", 0.0) + time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    try:
        (run_dir / "tmp").rmdir()
    except OSError:
        pass
    return _stats(cfg, inputs, done, time.perf_counter() - started)


def _stats(cfg, inputs: list[PrepareInput], done: Outcome, total: float) -> dict:
    sources: dict[str, dict] = {}
    for inp in inputs:
        sources.setdefault(inp.source.name, {"side": inp.side, "in": 0, "kept": 0, "rejected": 0})
    step_seconds: dict[str, float] = defaultdict(float)
    for st in done.mapped:
        for name, c in st["counts"].items():
            sources[name]["in"] += c["in"]
            sources[name]["rejected"] += c["rejected"]
        for step, sec in st["seconds"].items():
            step_seconds[step] += sec
    examples: dict[str, int] = defaultdict(int)
    for final in done.finals:
        for name, n in final["kept"].items():
            sources[name]["kept"] += n
        for name, n in final["duplicates"].items():
            sources[name]["rejected"] += n
        for name, n in final["examples"].items():
            examples[name] += n
    for name, c in sources.items():
        if c["in"] != c["kept"] + c["rejected"]:
            raise WebtuneError(f"prepare: source {name!r} does not reconcile ({c['in']} in, {c['kept']} kept, "
                               f"{c['rejected']} rejected); this is a bug, please report it")
    n_in = sum(c["in"] for c in sources.values())
    plan = done.plan
    return {
        "sources": sources,
        "examples": dict(examples),
        "duplicates": int((plan.keeper != np.arange(len(plan.keeper))).sum()),
        "executor": executor_name(cfg),
        "workers": done.workers,
        "shards": done.shards,
        "seconds": {"total": round(total, 3), **{k: round(v, 3) for k, v in done.seconds.items()}},
        "worker_seconds": {k: round(v, 3) for k, v in sorted(step_seconds.items())},
        "records_per_s": round(n_in / total, 1) if total > 0 else None,
        **done.extra,
    }
