"""Every webtune command, parsed in one place (argparse).

`run`, `prepare`, `validate` and `preview` hand everything after webtune's own flags to Hydra
untouched (`-m`, `--config-dir`, `hydra.*`, overrides), so sweeps and config folders work as in any
Hydra app. Errors are one line; the traceback only with `--verbose` or HYDRA_FULL_ERROR=1.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import WebtuneError, one_line, wants_traceback

REGISTRY = "runs/registry"
# Hydra commands: webtune's own flags are taken out, the rest goes to Hydra as typed.
HYDRA_COMMANDS = {
    "run": ("run every stage into a new run directory", []),
    "prepare": ("run the data stages only (source, prepare, mix, ledger); `run` continues from them", []),
    "validate": ("compose the config and check everything that can be checked without running", []),
    "preview": ("render a few examples (n=5, sampled with seed=0, or ids=A,B) with token counts and the loss mask",
                ["--allow-trigger", "--allow-teacher"]),
}
HYDRA_EPILOG = ("Everything else is passed to Hydra: overrides (key=value, group=option), -m for a sweep, "
                "--config-dir DIR, hydra.* keys.")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="webtune", description="Web data in, a fine-tuned domain model out.",
                                 allow_abbrev=False)
    ap.add_argument("--verbose", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, allow_abbrev=False)

    for add in (add_hydra_commands, add_run_commands, add_registry_commands, add_deploy_commands,
                add_sweep_summary_command, add_cache_commands):
        add(command)
    return ap


def add_hydra_commands(command) -> None:
    """run, prepare, validate, preview: Hydra overrides after the flags."""
    for name, (help, _) in HYDRA_COMMANDS.items():
        p = command(name, help)
        p.epilog = HYDRA_EPILOG
        if name == "preview":
            p.add_argument("--allow-trigger", action="store_true",
                           help="allow a paid request (Bright Data trigger, scrape, marketplace filter)")
            p.add_argument("--allow-teacher", action="store_true",
                           help="ask the teacher for the questions of the sections shown (cached for the run)")
        p.add_argument("overrides", nargs="*", help="Hydra overrides")


def add_run_commands(command) -> None:
    """Commands on a run directory, and init."""
    p = command("init", "write a starter domain (conf/, templates/, sample records) into the current folder")
    p.add_argument("name", help="the domain's name (letters, digits, _)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")

    p = command("resume", "continue a killed run in its own directory")
    p.add_argument("run_dir")
    p = command("reproduce", "rebuild a run from its saved config and raw data, compare every data file")
    p.add_argument("run_dir")
    p.add_argument("--data-only", action="store_true", help="only the data stages (no training)")
    p = command("eval", "evaluate a past run again (overrides are kept in its config.yaml)")
    p.add_argument("run_dir")
    p.add_argument("overrides", nargs="*", help="e.g. eval.judge.enabled=true")
    p.add_argument("--answers", metavar="FILE.jsonl", help="score answers produced elsewhere, one "
                   '{"id": PROMPT_ID, "answer": TEXT} a line (ids from RUN/eval/generations.jsonl)')
    p = command("refresh", "re-acquire a promoted model's sources, train a candidate, promote it only if better")
    p.add_argument("name", help="a registered model with a promoted version")
    p.add_argument("overrides", nargs="*", help="config overrides on top of the promoted version's config")
    p.add_argument("--registry", default=REGISTRY)
    p.add_argument("--dry-run", action="store_true", help="the diff and the plan: nothing paid, trained or promoted")
    p.add_argument("--from-base", action="store_true", help="train from the base model, not the promoted adapter")
    p = command("compare", "write a comparison report of runs")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="compare.html")
    p = command("list", "what ships: sources, templates and models (name and what it is), and your conf/'s")
    p.add_argument("what", nargs="?", choices=["sources", "templates", "models"])
    p = command("ledger", "what happened to each input record, and to each section of a page")
    p.add_argument("run_dir")
    p.add_argument("--reason", help="records and page sections whose reason contains this (e.g. too_long)")
    p.add_argument("--source")
    p.add_argument("--id", help="one record (or section) id")
    p.add_argument("--page", help="a page (its id, or its file: argparse.html): its line, then each section's")
    p.add_argument("--section", help="one section, e.g. docs:argparse.html#1/s3")
    p.add_argument("--limit", type=int, default=50)


def add_registry_commands(command) -> None:
    """`webtune models ...`: versions, promote, rollback."""
    p = command("models", "the model registry: versions, promote, rollback")
    made = add_actions(p, "--registry", REGISTRY, {
        "list": ("every registered model", []),
        "show": ("a model's versions", ["name"]),
        "register": ("register a run as the next version", ["name", "run_dir"]),
        "promote": ("make a version (N or vN) the one served", ["name", "version"]),
        "rollback": ("serve the previously promoted version again", ["name"]),
        "delete": ("delete a model or one version", ["name", "version?"])})
    made["promote"].add_argument("--force", action="store_true",
                                 help="promote even if its evaluation failed, is inconclusive or unverified")
    for action in ("show", "promote", "rollback"):
        made[action].add_argument("--json", action="store_true", help="the whole record as JSON, not a summary")
    made["delete"].add_argument("--force", action="store_true")


def add_deploy_commands(command) -> None:
    """serve, chat, export."""
    p = command("serve", "an OpenAI-compatible endpoint for a registered model or a run directory")
    p.add_argument("target", help="NAME[@vN] in the registry, or a run directory (a directory wins)")
    p.add_argument("--registry", default=REGISTRY)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key-env", help="env var holding the bearer key clients must send")
    p.add_argument("--no-auth", action="store_true", help="allow a non-loopback host without an API key")
    p.add_argument("--max-tokens", type=int, help="server default and maximum for max_tokens")
    p.add_argument("--max-concurrency", type=int, default=32, help="streams decoded together in one batch")
    p.add_argument("--queue-size", type=int, default=64, help="sequences waiting beyond those; more get 429")
    p.add_argument("--max-request-sequences", type=int, help="prompts x n one request may ask for (default 32)")
    p.add_argument("--max-body-bytes", type=int, help="larger request bodies get 413 (default 4 MiB)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--log-prompts", action="store_true", help="write prompt text into the request log")
    p.add_argument("--system", help="system prompt for requests without one (default: the one the run "
                                    "trained with; \"\" for none)")
    p.add_argument("--engine", choices=["transformers", "vllm", "auto"], default="transformers",
                   help="what decodes: webtune's own batching on transformers, vLLM as a child process "
                        "(`make vllm`), or auto (vLLM when found)")
    p.add_argument("--vllm-command", help="the vllm executable or its venv (default: $WEBTUNE_VLLM, "
                                          ".venv-vllm, PATH)")
    p.add_argument("--vllm-kv-cache-gib", type=float, help="vLLM's KV cache memory (default 1 GiB)")

    p = command("chat", "a REPL with a model")
    p.add_argument("target", help="NAME[@vN], a run directory, a model directory, or openai:MODEL_ID")
    p.add_argument("--registry", default=REGISTRY)
    p.add_argument("--system")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int)
    p.add_argument("--base-url", help="an OpenAI-compatible endpoint, e.g. `webtune serve`'s")
    p.add_argument("--api-key-env", help="env var holding the key (default OPENAI_API_KEY)")
    p.add_argument("--engine", choices=["transformers", "vllm", "auto"], default="transformers",
                   help="what decodes a local model: transformers, vLLM (`make vllm`), or auto")
    p.add_argument("--vllm-command", help="the vllm executable or its venv")

    p = command("export", "write a trained model as a standalone folder or a GGUF file")
    p.add_argument("target", help="a run directory or NAME[@vN]")
    p.add_argument("--format", choices=["merged", "gguf"], default="merged")
    p.add_argument("--quant", help="gguf: f16 (default) or q8_0; K-quants need llama-quantize on PATH")
    p.add_argument("--ollama", action="store_true", help="also write an Ollama Modelfile")
    p.add_argument("--out", help="output folder (default: beside the version or under the run)")
    p.add_argument("--registry", default=REGISTRY)


def add_sweep_summary_command(command) -> None:
    p = command("sweep-summary", "rank a sweep's points again (runs/sweeps/<timestamp>/summary.html, .json)")
    p.add_argument("sweep_dir", help="runs/sweeps/<timestamp>")
    p.add_argument("--by", default="gate", help="gate (default: the gate, then domain gain), domain_gain, domain_loss, "
                   "general_change, chrF, rougeL, judge_win_rate, train_seconds, or a dotted path in metrics.json")
    direction = p.add_mutually_exclusive_group()
    direction.add_argument("--higher-is-better", dest="higher_is_better", action="store_true", default=None)
    direction.add_argument("--lower-is-better", dest="higher_is_better", action="store_false")


def add_cache_commands(command) -> None:
    """The base model and source snapshot caches."""
    p = command("fetch-base", "get a base model into the model cache (default SmolLM2-135M-Instruct)")
    p.add_argument("name", nargs="?", help="smollm2-135m-instruct (default, Apache-2.0) or gemma3-270m "
                   "(Gemma Terms of Use, pretrained; for model=gemma3_270m_*)")
    p.add_argument("--force", action="store_true", help="download and convert again")

    p = command("sources", "cached source snapshots; Bright Data's marketplace datasets")
    made = add_actions(p, "--runs-dir", "runs", {
        "list": ("what is cached, its age and size", []),
        "show": ("one cached snapshot", ["key"]),
        "forget": ("drop a cached snapshot", ["key"]),
        "datasets": ("Bright Data marketplace datasets (id, name, records)", [])})
    made["datasets"].add_argument("--search", help="only names containing this word")
    made["datasets"].add_argument("--base-url", default="https://api.brightdata.com")
    made["datasets"].add_argument("--api-key-env", default="BRIGHTDATA_API_TOKEN")


def add_actions(parser: argparse.ArgumentParser, flag: str, default: str,
                actions: dict[str, tuple[str, list[str]]]) -> dict[str, argparse.ArgumentParser]:
    """Sub-actions (`models promote NAME V`) with their positionals (`NAME?`: optional); the shared
    option (`--registry`) is accepted before or after the action."""
    parser.add_argument(flag, default=default)
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    made = {}
    for name, (help, positionals) in actions.items():
        made[name] = sub.add_parser(name, help=help, description=help)
        for arg in positionals:
            made[name].add_argument(arg.rstrip("?"), nargs="?" if arg.endswith("?") else None)
        made[name].add_argument(flag, default=argparse.SUPPRESS, help=f"(default {default})")
    return made


# Commands whose work lives in a stage package: (module, function), called with the Namespace.
DELEGATED = {
    "models": ("webtune.deploy.cli", "models_command"),
    "serve": ("webtune.deploy.cli", "serve_command"),
    "chat": ("webtune.deploy.cli", "chat_command"),
    "export": ("webtune.deploy.export", "export_command"),
    "fetch-base": ("webtune.base_model", "fetch_base_command"),
    "list": ("webtune.catalog", "list_command"),
    "sweep-summary": ("webtune.report.sweep", "sweep_summary_command"),
    "refresh": ("webtune.refresh.command", "cmd_refresh"),
}


def split_hydra_args(command: str, argv: list[str]) -> tuple[dict, list[str]]:
    """webtune's own flags of a Hydra command, and everything else, in the order typed."""
    own = HYDRA_COMMANDS[command][1]
    flags = {flag.lstrip("-").replace("-", "_"): flag in argv for flag in own}
    return flags, [a for a in argv if a not in own]


def dispatch(argv: list[str]) -> int:
    from . import commands
    parser = build_parser()
    if argv and argv[0] in HYDRA_COMMANDS and not {"-h", "--help"} & set(argv[1:]):
        flags, overrides = split_hydra_args(argv[0], argv[1:])
        return getattr(commands, f"cmd_{argv[0]}")(overrides, **flags) or 0
    ns, extra = parser.parse_known_args(argv)
    if extra and ns.command == "refresh" and not any(e.startswith("-") for e in extra):
        ns.overrides += extra   # overrides typed after a flag (`refresh shop --dry-run key=value`)
    elif extra:
        parser.parse_args(argv)   # the usual one-line usage error
    if ns.command == "sources":
        target = ("webtune.sources.brightdata_market", "datasets_command") if ns.action == "datasets" \
            else ("webtune.sources.cache", "command")
    elif ns.command in DELEGATED:
        target = DELEGATED[ns.command]
    else:
        return getattr(commands, f"cmd_{ns.command}")(ns) or 0
    return getattr(importlib.import_module(target[0]), target[1])(ns) or 0


def quiet_library_deprecations() -> None:
    """A FutureWarning that transformers raises about its own internals (a deprecated API it still
    calls itself, on every model load) tells a webtune user nothing they can act on: hidden unless
    --verbose. One our code triggers is attributed to our module, and still shown."""
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)(\.|$)")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:
        os.environ["WEBTUNE_VERBOSE"] = "1"
        argv = [a for a in argv if a != "--verbose"]
    else:
        quiet_library_deprecations()
    if not argv:
        build_parser().print_help()
        return 0
    try:
        return dispatch(argv)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error reaches the user as one line
        if wants_traceback():
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        if not isinstance(exc, WebtuneError):
            print("       (run with --verbose for the traceback)", file=sys.stderr)
        return 2 if isinstance(exc, WebtuneError) else 1


if __name__ == "__main__":
    sys.exit(main())
