"""How much of the prepared data a training run covers, said before it starts (with a rough time)
and recorded after it ends, so a 12-step run is never read as a pass over all the data.

The time is a rough guess: the forward and backward passes cost about 6 x parameters FLOPs per token
for full fine-tuning and about 4 x for LoRA (no weight gradients for the frozen base), run at about
half of what a short matmul benchmark reaches on this device right now (so a loaded machine gives a
longer estimate). The progress bar shows the real rate once training runs.
"""
from __future__ import annotations

import time

EFFICIENCY = 0.5   # share of the benchmark's matmul rate a training step reaches (2 idle CPU cores: ~0.5)


def coverage(rows: int, tokens: int, rows_per_step: int, steps: int) -> dict:
    """What `steps` optimizer steps of `rows_per_step` packed rows cover of `rows` rows holding `tokens`
    tokens (the Trainer cycles the rows again for more than one epoch)."""
    planned = steps * rows_per_step
    return {"rows_prepared": rows, "tokens_prepared": tokens, "rows_planned": planned,
            "tokens_planned": round(planned * tokens / rows) if rows else 0,
            "epochs_planned": round(planned / rows, 4) if rows else 0.0}


def matmul_flops(dtype, device: str) -> float:
    """FLOP/s of square matmuls in `dtype` on `device`, measured for about 0.2 s."""
    import torch
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < 0.2:
        a @ b
        done += 1
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * n ** 3 * done / (time.perf_counter() - start)


def expected_seconds(params: int, method: str, tokens: int, flops: float) -> float:
    per_token = (6 if method == "full" else 4) * params
    return per_token * tokens / (EFFICIENCY * flops)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def epochs(share: float) -> str:
    return f"{share:.1%} of an epoch" if share < 1 else f"{share:.3g} epochs"


def describe(cov: dict, seconds: float | None) -> str:
    line = (f"training covers ~{cov['tokens_planned']:,} of the {cov['tokens_prepared']:,} prepared tokens "
            f"({epochs(cov['epochs_planned'])}: {cov['rows_planned']:,} packed rows of {cov['rows_prepared']:,})")
    if seconds is not None:
        line += f"; expected about {duration(seconds)} here now (a rough estimate; the progress bar has the real rate)"
    return line


def expected_time(mem: dict | None, method: str, dtype, tokens: int, world: int) -> float | None:
    """Seconds the planned tokens should take, each of `world` devices doing its share; None without
    a parameter count (no memory estimate)."""
    if not mem:
        return None
    import torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return expected_seconds(mem["params"], method, tokens / max(1, world), matmul_flops(dtype, device))


def trained(state, cov: dict, rows_per_step: int) -> dict:
    """After training: the tokens the Trainer fed (its own count, with any padding to the longest row
    of a micro-batch) and the share of an epoch that the optimizer steps covered."""
    rows = state.global_step * rows_per_step
    return {"tokens": int(state.num_input_tokens_seen or 0) or round(rows * cov["tokens_prepared"] /
                                                                     max(1, cov["rows_prepared"])),
            "tokens_prepared": cov["tokens_prepared"], "rows_trained": rows,
            "epochs_trained": round(rows / cov["rows_prepared"], 4) if cov["rows_prepared"] else 0.0}
