"""`webtune preview [overrides] n=5`: a few rendered examples, their token counts and the loss mask.

Nothing is trained and no run directory is made: the source's cached snapshot is read (acquired
into runs/.cache/source/ if there is none, which a `webtune run` with the same source then reuses),
records are cleaned and rendered as the prepare stage would, then tokenized with the model's chat
template. Trained (assistant) tokens are shown in green. A paid request (a Bright Data trigger) is
never made unless `allow_trigger` (`--allow-trigger`).
"""
from __future__ import annotations

from rich.panel import Panel
from rich.text import Text

from .hydra_setup import validate_overrides
from rich.console import Console

console = Console(stderr=True, highlight=False)  # wraps long lines inside panels (the log console does not)
from .records import Rejection


def preview(args: list[str], allow_trigger: bool = False) -> int:
    n = 5
    rest = []
    for a in args:
        if a.startswith("n="):
            n = int(a[2:])
        else:
            rest.append(a)
    cfg = validate_overrides(rest)  # composed once, config mistakes reported in one line
    from . import sources
    from .sources.cache import acquire_cached
    from .prepare.clean import Cleaner
    from .config import plain
    from .prepare.fields import fields_read
    from .prepare.render import Invalid, load_tasks
    tasks = load_tasks(cfg.template)
    cleaner = Cleaner(plain(cfg.prepare).clean)
    chat = None
    if cfg.model.kind == "hf":
        from .chat.tokenize import ChatTokenizer, load_tokenizer
        chat = ChatTokenizer(load_tokenizer(cfg.model), cfg.model.name_or_path)
    shown = 0
    src = sources.as_requested(cfg.source, fields_read(cfg.template, cfg.prepare))  # the same key a run computes
    snap = acquire_cached(src, cfg.runs_dir, allow_paid=allow_trigger, console=console)
    for item in sources.iter_records(sources.reading_config(src, snap.root), snap.paths):
        if shown >= n:
            break
        if isinstance(item, Rejection):
            console.print(f"[yellow]{item.id}[/yellow] rejected: {item.reason} {item.detail}")
            continue
        fields = dict(item.fields)
        repairs = list(cleaner.clean(fields))
        for task in tasks:
            try:
                task.check(fields)
                messages = task.render(fields)
            except Invalid as exc:
                console.print(f"[yellow]{item.id}[/yellow] {task.name}: rejected: {exc}")
                continue
            show(item.id, task.name, messages, chat, repairs)
            shown += 1
    return 0


def show(record_id: str, task: str, messages: list[dict], chat, repairs) -> None:
    body = Text()
    title = f"{record_id} · {task}"
    if chat is None:
        for m in messages:
            body.append(f"{m['role']}: ", style="bold")
            body.append(m["content"] + "\n", style="green" if m["role"] == "assistant" else "")
    else:
        ids, labels = chat.encode(messages)
        trained = sum(1 for x in labels if x != -100)
        title += f" · {len(ids)} tokens, {trained} trained"
        for tok_id, lab in zip(ids, labels):
            piece = chat.tok.decode([tok_id])
            body.append(piece, style="bold green" if lab != -100 else "dim")
    if repairs:
        title += f" · repaired: {', '.join(map(str, repairs))}"
    console.print(Panel(body, title=title, title_align="left"))
