"""Which of the Trainer's checkpoints a resumed run may start from."""
from __future__ import annotations

import json
from pathlib import Path


def last_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint the Trainer finished saving: it writes trainer_state.json last, so a
    kill mid-save leaves a folder without (or with half) one, which must not be resumed from."""
    finished = []
    for path in folder.glob("checkpoint-*") if folder.is_dir() else []:
        try:
            json.loads((path / "trainer_state.json").read_text())
            finished.append((int(path.name.rsplit("-", 1)[1]), str(path)))
        except (OSError, ValueError):
            continue
    return max(finished)[1] if finished else None
