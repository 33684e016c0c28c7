"""Several processes (`accelerate launch -m webtune run ...`, torchrun): one run directory, chosen
by rank 0; the data stages run on rank 0 while the others wait; every process trains its shard
(the Trainer's DataLoader shards the packed rows); evaluate, report and register run on rank 0.
Only rank 0 writes the run directory; the other ranks only read it, so on several machines the run
directory must be on a file system every machine mounts at the same path.

No rank can race another: before anyone trains, rank 0 clears the train stage's old outputs and
chooses the checkpoint to resume from; it broadcasts the choice, all ranks meet at a barrier, then
all train from that checkpoint. A rank that fails writes its one-line error to RUN/.ranks/; every
other rank watches that folder and ends at once with that line, instead of waiting in a collective.
Tokens per optimizer step are exact: world × rows per device × accumulation × max_seq_len must equal
model.train.batch_tokens, or the run refuses to start and names the nearest exact settings.
"""
from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

from ..errors import WebtuneError
from ..fileio import atomic_write_text

_choice: dict = {}  # what rank 0 decided for this process's training (the resume checkpoint)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def state():
    """accelerate's process group (gloo on CPU, nccl on GPUs); idempotent."""
    import torch
    from accelerate import PartialState
    return PartialState(cpu=not torch.cuda.is_available())


def broadcast(value):
    """Rank 0's `value` on every rank."""
    from torch.distributed import broadcast_object_list
    box = [value]
    broadcast_object_list(box, src=0)
    return box[0]


def run_dir_overrides(cfg) -> list[str]:
    """Hydra overrides giving every process rank 0's new run directory; the other ranks write no
    .hydra/ and no run.log of their own into it."""
    from ..rundir import new_run_dir
    main = state().is_main_process
    path = broadcast(str(new_run_dir(cfg.runs_dir, cfg.name)) if main else None)
    extra = [] if main else ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[]"]
    return [f"hydra.run.dir='{path}'", *extra]  # quoted: a path may hold spaces


# ---------------------------------------------------------------- tokens per step
def rows_per_device(batch_tokens: int, world: int, grad_accum: int, seq_len: int) -> int:
    """Packed rows per device per micro-batch such that world × rows × grad_accum × seq_len is
    exactly batch_tokens; otherwise a WebtuneError naming the nearest exact settings."""
    unit = world * grad_accum * seq_len
    if batch_tokens > 0 and unit > 0 and batch_tokens % unit == 0:
        return batch_tokens // unit
    raise WebtuneError(
        f"model.train.batch_tokens={batch_tokens} is not {world} process(es) x rows per device x "
        f"model.train.grad_accum={grad_accum} x mix.max_seq_len={seq_len} for any whole number of rows "
        f"({batch_tokens}/{unit} = {batch_tokens / max(unit, 1):g}); nearest exact settings: "
        + "; ".join(nearest_settings(batch_tokens, world, grad_accum, seq_len)))


def nearest_settings(batch_tokens: int, world: int, grad_accum: int, seq_len: int) -> list[str]:
    """Exact alternatives changing one setting: the accumulation, the tokens per step, the processes."""
    rows = batch_tokens // max(1, seq_len)  # packed rows per optimizer step the config asks for
    out = []
    accums = [g for g in range(1, rows + 1) if rows % (world * g) == 0 and rows * seq_len == batch_tokens]
    if accums:
        g = min(accums, key=lambda g: (abs(g - grad_accum), g))
        out.append(f"model.train.grad_accum={g} ({rows // (world * g)} row(s) per device)")
    unit = world * grad_accum * seq_len
    below, above = max(1, batch_tokens // unit) * unit, (batch_tokens // unit + 1) * unit
    best = min((below, above), key=lambda b: (abs(b - batch_tokens), b))
    out.append(f"model.train.batch_tokens={best} ({best // unit} row(s) per device)")
    worlds = [w for w in range(1, rows + 1) if rows % (w * grad_accum) == 0 and rows * seq_len == batch_tokens]
    if worlds and world not in worlds:
        w = min(worlds, key=lambda w: (abs(w - world), -w))
        out.append(f"{w} process(es) ({rows // (w * grad_accum)} row(s) per device)")
    return out


def check_tokens_per_step(cfg) -> None:
    """Refuse a local (hf) training config whose tokens per step are not exact, before anything runs."""
    model = cfg.get("model")
    kind = model.get("kind", "hf") if model is not None else None
    if getattr(kind, "value", kind) != "hf" or model.get("train") is None:
        return
    rows_per_device(int(model.train.batch_tokens), world_size(), int(model.train.grad_accum),
                    int(cfg.mix.max_seq_len))


# ---------------------------------------------------------------- resume
def resume_choice(folder: Path) -> str | None:
    """The checkpoint to resume from: rank 0's broadcast choice in a multi-process run (chosen after
    it cleared stale checkpoints), else the newest finished one in `folder`."""
    if "resume" in _choice:
        return _choice["resume"]
    from .checkpoints import last_checkpoint
    return last_checkpoint(folder)


# ---------------------------------------------------------------- failures
class Ranks:
    """RUN/.ranks/failed-<rank>.txt: a failed rank's one-line error, watched by every other rank."""

    def __init__(self, run_dir: Path, rank: int):
        self.folder, self.rank = Path(run_dir) / ".ranks", rank

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def failed(self, error: BaseException) -> None:
        lines = str(error).strip().splitlines() or [""]
        line = lines[0] if isinstance(error, WebtuneError) else f"{type(error).__name__}: {lines[0]}"
        atomic_write_text(self.folder / f"failed-{self.rank}.txt", line)

    def first_failure(self) -> tuple[int, str] | None:
        found = sorted(self.folder.glob("failed-*.txt")) if self.folder.is_dir() else []
        for path in found:
            rank = int(path.stem.split("-")[1])
            if rank != self.rank:
                return rank, path.read_text()
        return None

    def end_if_failed(self) -> None:
        found = self.first_failure()
        if found:
            print(f"webtune: rank {found[0]} failed: {found[1]}", file=sys.stderr, flush=True)
            os._exit(1)  # this rank may be blocked in a collective that will never complete

    def watch(self, every: float = 0.2) -> None:
        def loop():
            while True:
                self.end_if_failed()
                time.sleep(every)
        threading.Thread(target=loop, name="webtune-rank-watch", daemon=True).start()


def execute(runner, stages, only: set[str] | None, context) -> None:
    """Data stages on rank 0, training on every rank, the rest on rank 0. `runner` is None on the
    other ranks; `context` builds a StageContext for a stage run outside the runner."""
    st = state()
    ctx = context()
    ranks = Ranks(ctx.run_dir, st.process_index)
    if st.is_main_process:
        ranks.clear()  # a past run's failures; the others start watching only after the broadcast below
    try:
        _execute(runner, stages, only, ctx, context, st, ranks)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            ranks.failed(e)
        raise


def _execute(runner, stages, only, ctx, context, st, ranks: Ranks) -> None:
    names = [s.name for s in stages]
    cut = names.index("train")
    before, train, after = stages[:cut], stages[cut], stages[cut + 1:]
    wanted = lambda group: {s.name for s in group if only is None or s.name in only}  # noqa: E731
    training = "train" in wanted([train])
    decision = None
    if st.is_main_process:
        try:
            if training:
                check_tokens_per_step(ctx.cfg)
            if wanted(before):
                runner.run(only=wanted(before))
            decision = "train" if training and runner.pending(train) else "skip"
        except BaseException:
            broadcast("failed")  # release the waiting ranks (execute records the error first)
            raise
    decision = broadcast(decision)
    ranks.watch()
    if decision == "failed":
        time.sleep(0.5)
        ranks.end_if_failed()
        raise SystemExit(1)
    if st.is_main_process:
        started = []
        if training:
            runner.run_stage(train, before_run=lambda: started.append(_start_training(st, ctx.run_dir, True)))
        if decision == "train" and not started:  # unexpectedly skipped after all: release the others
            _start_training(st, ctx.run_dir, False)
    elif decision == "train" and _start_training(st, ctx.run_dir, None):
        train.run(context())
    st.wait_for_everyone()
    if st.is_main_process and wanted(after):
        runner.run(only=wanted(after))


def _start_training(st, run_dir: Path, train: bool | None) -> bool:
    """Rank 0 (its stale outputs cleared) chooses the checkpoint; every rank gets it; all meet.
    Returns whether to train (rank 0 passes it; the others learn it here)."""
    choice = None
    if st.is_main_process:
        choice = {"train": train, "resume": resume_choice(Path(run_dir) / "checkpoints") if train else None}
    choice = broadcast(choice)
    _choice["resume"] = choice["resume"]
    st.wait_for_everyone()
    return bool(choice["train"])
