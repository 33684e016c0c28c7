"""Several processes (`accelerate launch -m webtune run ...`, torchrun): one run directory, chosen
by rank 0; the data stages run on rank 0 while the others wait; every process trains its shard
(the Trainer's DataLoader shards the packed rows); evaluate, report and register run on rank 0.
Only rank 0 writes the run directory; the other ranks only read it."""
from __future__ import annotations

import os


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
    from .rundir import new_run_dir
    main = state().is_main_process
    path = broadcast(str(new_run_dir(cfg.runs_dir, cfg.name)) if main else None)
    extra = [] if main else ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[]"]
    return [f"hydra.run.dir='{path}'", *extra]  # quoted: a path may hold spaces


def execute(runner, stages, only: set[str] | None, context) -> None:
    """Data stages on rank 0, training on every rank, the rest on rank 0. `runner` is None on the
    other ranks; `context` builds a StageContext for a stage run outside the runner."""
    names = [s.name for s in stages]
    cut = names.index("train")
    before, train, after = stages[:cut], stages[cut], stages[cut + 1:]
    wanted = lambda group: {s.name for s in group if only is None or s.name in only}  # noqa: E731
    st = state()
    decision = None
    if st.is_main_process:
        try:
            if wanted(before):
                runner.run(only=wanted(before))
            decision = "train" if "train" in wanted([train]) and runner.pending(train) else "skip"
        except BaseException:
            broadcast("failed")  # release the waiting ranks before raising
            raise
    decision = broadcast(decision)
    if decision == "failed":
        raise SystemExit(1)  # rank 0 reports the error
    if st.is_main_process:
        if "train" in wanted([train]):
            runner.run_stage(train)  # runs it (with the other ranks), or skips / restores it
    elif decision == "train":
        train.run(context())
    st.wait_for_everyone()
    if st.is_main_process and wanted(after):
        runner.run(only=wanted(after))
