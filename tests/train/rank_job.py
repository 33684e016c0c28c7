"""One rank of a multi-process run for tests/train/test_ranks.py (launched by torchrun on CPU, gloo,
127.0.0.1): the real Runner and `distributed.execute` over three small stages.

    rank_job.py RUN_DIR MODE [FAIL_RANK]

MODE resume: the train stage records, on every rank, the checkpoint it would resume from and what
it found in checkpoints/ (RUN_DIR/seen-<rank>.json). MODE fail: the train stage raises on FAIL_RANK
while the other ranks wait in an all_reduce that can never complete without it.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from webtune.train import distributed
from webtune.errors import WebtuneError
from webtune.runner import Runner, Stage, StageContext


ROWS = b"rows\n" * (8 << 20)  # 40 MB: rank 0 hashes it (a while) before it clears the train stage's outputs


def data(ctx: StageContext) -> dict:
    (ctx.run_dir / "data").mkdir(parents=True, exist_ok=True)
    (ctx.run_dir / "data" / "rows.txt").write_bytes(ROWS)
    return {}


def record_resume(ctx: StageContext) -> dict:
    import torch.distributed as dist
    rank = dist.get_rank()
    folder = ctx.run_dir / "checkpoints"
    seen = {"rank": rank, "resume": distributed.resume_choice(folder),
            "found": sorted(p.name for p in folder.glob("checkpoint-*")) if folder.is_dir() else []}
    (ctx.run_dir / f"seen-{rank}.json").write_text(json.dumps(seen))
    return seen


def fail_on(rank_to_fail: int):
    def train(ctx: StageContext) -> dict:
        import torch
        import torch.distributed as dist
        if dist.get_rank() == rank_to_fail:
            raise WebtuneError(f"data/packed/train.npz: row 7 is corrupt on rank {rank_to_fail}; rerun the mix stage")
        dist.all_reduce(torch.ones(1))  # needs every rank: waits forever for the failed one
        return {}
    return train


def build(run_dir: Path, mode: str, fail_rank: str = "1"):
    cfg = OmegaConf.create({"name": "ranks", "runs_dir": str(Path(run_dir).parent / "runs"), "model": {"seed": 0}})
    train = record_resume if mode == "resume" else fail_on(int(fail_rank))
    stages = [Stage("data", data, config=["name"], outputs=["data/rows.txt"], cacheable=False),
              Stage("train", train, config=["model"], inputs=["data/rows.txt"], outputs=["model"],
                    scratch=["checkpoints"], cacheable=False),
              Stage("after", lambda ctx: {}, config=["name"], cacheable=False)]
    return cfg, stages


def main(run_dir: str, mode: str, fail_rank: str = "1") -> None:
    run_dir = Path(run_dir)
    cfg, stages = build(run_dir, mode, fail_rank)
    main_rank = distributed.state().is_main_process
    runner = Runner(cfg, run_dir, stages, None, lambda message: None, use_cache=False) if main_rank else None
    distributed.execute(runner, stages, None, lambda: StageContext(cfg, run_dir, None, lambda message: None))


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except WebtuneError as e:
        print(f"webtune: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
