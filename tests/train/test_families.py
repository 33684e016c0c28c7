"""Each shipped model family's config, exercised on a tiny model of the same architecture built from
config (no hub downloads here): its chat template puts the end-of-turn token in the loss mask and
renders the family's own format, its LoRA target modules exist, and a few real training steps
through the hf backend save a model that loads with from_pretrained.

The helpers here (tiny tokenizers and models per family) are also used by test_lora.py and
test_accelerate.py.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from webtune.train import hf
from webtune.train.memory import estimate, model_shape
from webtune.errors import WebtuneError
from webtune.hydra_setup import compose
from webtune.mix.mix import pack_split
from webtune.chat.tokenize import IGNORE, ChatTokenizer, load_tokenizer
from webtune.paths import SHIPPED

REPO = Path(__file__).resolve().parents[2]
CORPUS = SHIPPED / "examples/general/corpus.txt"

# Per family: the architecture (model_type) and the special tokens of its real tokenizer.
FAMILIES = {
    "gemma3_1b": dict(model_type="gemma3_text", bos="<bos>", eos="<eos>", pad="<pad>",
                      extra=["<start_of_turn>", "<end_of_turn>"], end_of_turn="<end_of_turn>"),
    "gemma3_4b": dict(model_type="gemma3", bos="<bos>", eos="<eos>", pad="<pad>",
                      extra=["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                             "<image_soft_token>"], end_of_turn="<end_of_turn>"),
    "llama31_8b": dict(model_type="llama", bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None,
                       extra=["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"],
                       end_of_turn="<|eot_id|>"),
    "mistral7b": dict(model_type="mistral", bos="<s>", eos="</s>", pad=None, extra=["<unk>", "[INST]", "[/INST]"],
                      end_of_turn="</s>"),
    "falcon3_7b": dict(model_type="llama", bos=None, eos="<|endoftext|>", pad=None,
                       extra=["<|system|>", "<|user|>", "<|assistant|>"], end_of_turn="<|endoftext|>"),
}

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "And now?"},
    {"role": "assistant", "content": "Bye."},
]

# The family's own format for CONVERSATION (as the model's published template renders it).
RENDERED = {
    "gemma3_1b": "<bos><start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello."
                 "<end_of_turn>\n<start_of_turn>user\nAnd now?<end_of_turn>\n<start_of_turn>model\nBye.<end_of_turn>\n",
    "llama31_8b": "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
                  "Today Date: 26 Jul 2024\n\nYou are terse.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                  "Hi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                  "<|start_header_id|>user<|end_header_id|>\n\nAnd now?<|eot_id|>"
                  "<|start_header_id|>assistant<|end_header_id|>\n\nBye.<|eot_id|>",
    "mistral7b": "<s>[INST] Hi there[/INST] Hello.</s>[INST] You are terse.\n\nAnd now?[/INST] Bye.</s>",
    "falcon3_7b": "<|system|>\nYou are terse.\n<|user|>\nHi there\n<|assistant|>\nHello.<|endoftext|>\n"
                  "<|user|>\nAnd now?\n<|assistant|>\nBye.<|endoftext|>",
}
RENDERED["gemma3_4b"] = RENDERED["gemma3_1b"]
# The prompt for the next reply (add_generation_prompt) after the first exchange and a new question.
PROMPT_END = {"gemma3_1b": "<start_of_turn>model\n", "gemma3_4b": "<start_of_turn>model\n",
              "llama31_8b": "<|start_header_id|>assistant<|end_header_id|>\n\n", "mistral7b": "[/INST]",
              "falcon3_7b": "<|assistant|>\n"}


def tiny_tokenizer(bos=None, eos="</s>", pad=None, extra=(), vocab_size=400) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the bundled general text, with a family's special tokens."""
    specials = [t for t in [pad, bos, eos, *extra] if t]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS.read_text().splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad or eos,
                                   additional_special_tokens=[t for t in extra])


def tiny_config(model_type: str, tok, **over):
    """A 2-layer model of the family's architecture, sized for CPU tests."""
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512, **ids)
    if model_type == "gemma3":  # text + a tiny SigLIP vision tower, as in gemma-3-4b-it
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      image_size=28, patch_size=14)
        return AutoConfig.for_model("gemma3", text_config={**text, "sliding_window": 16, **over},
                                    vision_config=vision, mm_tokens_per_image=4,
                                    image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"),
                                    boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
                                    eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"), **ids)
    if model_type == "gemma3_text":
        text["sliding_window"] = 16
    return AutoConfig.for_model(model_type, **{**text, **over})


def save_tiny_model(directory: Path, family: str, seed: int = 0) -> Path:
    """A tiny model + tokenizer of `family` in `directory`, loadable with from_pretrained."""
    spec = FAMILIES[family]
    tok = tiny_tokenizer(spec["bos"], spec["eos"], spec["pad"], spec["extra"])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(spec["model_type"], tok))
    model.save_pretrained(directory)
    tok.save_pretrained(directory)  # no chat template: the config's template file supplies it
    return directory


def family_cfg(family: str, method: str, model_dir: Path, *overrides: str):
    return compose([f"model={family}_{method}", f"model.name_or_path={model_dir}", "model.dtype=float32",
                    "mix.max_seq_len=256", "model.train.threads=1", "model.train.grad_accum=1", *overrides])  # 1 thread: no oversubscription


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """Synthetic chats with a learnable pattern: the reply names the colour of the asked thing."""
    import random
    rnd = random.Random(seed)
    things = ["sky", "grass", "snow", "coal", "sun", "sea", "rose", "leaf"]
    colours = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "sun": "yellow", "sea": "blue",
               "rose": "red", "leaf": "green"}
    out = []
    for _ in range(n):
        t = rnd.choice(things)
        out.append([{"role": "user", "content": f"What colour is the {t}?"},
                    {"role": "assistant", "content": f"The {t} is {colours[t]}."}])
    return out


def write_packed(run_dir: Path, cfg, train: list, val: list) -> None:
    """data/packed/{train,val}.npz as the mix stage writes them, from chats and the config's tokenizer."""
    chat = ChatTokenizer(load_tokenizer(cfg.model))
    for split, convs in (("train", train), ("val", val)):
        items = []
        for c in convs:
            ids, labels = chat.encode(c)
            items.append({"input_ids": ids, "labels": labels})
        pack_split(items, cfg.mix, run_dir / "data/packed" / f"{split}.npz")


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: save_tiny_model(root / f, f) for f in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_chat_template_renders_the_family_format_and_masks_the_end_of_turn(family, family_dirs):
    cfg = family_cfg(family, "lora", family_dirs[family])
    tok = load_tokenizer(cfg.model)
    assert tok.eos_token == FAMILIES[family]["end_of_turn"]
    assert tok.apply_chat_template(CONVERSATION, tokenize=False) == RENDERED[family]
    prompt = tok.apply_chat_template(CONVERSATION[:4], tokenize=False, add_generation_prompt=True)
    # the inference prompt is exactly the training text up to the reply: no train/serve mismatch
    assert prompt.endswith(PROMPT_END[family]) and RENDERED[family].startswith(prompt)
    assert RENDERED[family][len(prompt):].lstrip(" ").startswith("Bye.")

    ids, labels = ChatTokenizer(tok, family).encode(CONVERSATION)
    trained = [t for t, lab in zip(ids, labels) if lab != IGNORE]
    # exactly the two replies, each with its end-of-turn token, are trained on
    eot = FAMILIES[family]["end_of_turn"]
    assert trained.count(tok.eos_token_id) == 2
    text = tok.decode(trained)
    assert text.replace(" ", "") == f"Hello.{eot}Bye.{eot}", text
    assert "terse" not in text and "Hi there" not in text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_targets_exist_in_the_architecture(family, family_dirs):
    cfg = family_cfg(family, "lora", family_dirs[family])
    model = hf.load_model(cfg.model)
    assert model.config.model_type == FAMILIES[family]["model_type"]
    lora_layers = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if "lora_A" in n}
    hit = {n.rsplit(".", 1)[-1] for n in lora_layers}
    assert hit == set(cfg.model.lora.target_modules), hit
    layers = model.config.get_text_config().num_hidden_layers
    assert len(lora_layers) == layers * len(cfg.model.lora.target_modules)  # every layer, every projection
    assert not any("vision" in n for n in lora_layers)  # Gemma 3 4B: the language model only
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_few_training_steps_save_a_loadable_adapter(family, family_dirs, tmp_path):
    cfg = family_cfg(family, "lora", family_dirs[family], "model.train.max_steps=2",
                     "model.train.batch_tokens=512", "model.train.logging_steps=1")
    write_packed(tmp_path, cfg, conversations(12), conversations(4, seed=1))
    stats = hf.train(cfg, tmp_path)
    assert stats["steps"] == 2 and stats["eval_loss"] is not None
    assert stats["attn_implementation"] == ("flash_attention_2" if torch.cuda.is_available() and
                                            importlib.util.find_spec("flash_attn") else "sdpa")  # `auto`
    assert [h["step"] for h in stats["loss_curve"] if "loss" in h] == [1, 2]
    out = tmp_path / "model"
    assert (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(out)  # transformers loads base + adapter (peft installed)
    assert tuned.config.model_type == FAMILIES[family]["model_type"]
    assert any("lora_A" in n for n, _ in tuned.named_parameters())


@pytest.mark.parametrize("family", ["gemma3_1b", "llama31_8b"])
def test_full_variant_trains_every_weight(family, family_dirs, tmp_path):
    cfg = family_cfg(family, "full", family_dirs[family], "model.train.max_steps=1", "model.train.batch_tokens=512")
    write_packed(tmp_path, cfg, conversations(6), [])
    base = AutoModelForCausalLM.from_pretrained(family_dirs[family])
    stats = hf.train(cfg, tmp_path)
    assert stats["trainable_params"] == stats["params"]
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    changed = [n for (n, a), b in zip(base.named_parameters(), tuned.parameters()) if not torch.equal(a, b)]
    assert len(changed) > len(list(base.parameters())) // 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_qlora_without_cuda_fails_in_one_line(family_dirs):
    cfg = family_cfg("llama31_8b", "qlora", family_dirs["llama31_8b"])
    with pytest.raises(WebtuneError, match="qlora needs a CUDA GPU") as err:
        hf.load_model(cfg.model)
    assert "\n" not in str(err.value)


def test_wrong_target_modules_name_the_config_key(family_dirs):
    # the classic Falcon (RW) projection names do not exist in Falcon 3, which is Llama-shaped
    cfg = family_cfg("falcon3_7b", "lora", family_dirs["falcon3_7b"],
                     "model.lora.target_modules=[query_key_value,dense_h_to_4h]")
    with pytest.raises(WebtuneError, match="model.lora.target_modules"):
        hf.load_model(cfg.model)


def test_unknown_method_is_rejected_while_composing(family_dirs):
    with pytest.raises(Exception) as err:   # model.method is an enum: Hydra refuses it before anything loads
        family_cfg("mistral7b", "lora", family_dirs["mistral7b"], "model.method=lroa")
    assert "Invalid value 'lroa', expected one of [full, lora, qlora]" in str(err.value.__cause__)


def test_eos_token_must_be_in_the_vocabulary(family_dirs):
    cfg = family_cfg("gemma3_1b", "lora", family_dirs["llama31_8b"])  # a Llama tokenizer has no <end_of_turn>
    with pytest.raises(WebtuneError, match="model.eos_token='<end_of_turn>' is not a token"):
        load_tokenizer(cfg.model)


def test_memory_estimate_for_llama31_8b_shape():
    """The real 8B shape on the meta device: parameter and LoRA counts, and the estimate's parts."""
    config = AutoConfig.for_model("llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                  num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                  max_position_embeddings=131072, tie_word_embeddings=False)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    shape = model_shape(config, targets, r=16)
    assert shape.n_params == 8_030_261_248
    assert shape.lora_params == 41_943_040  # r (in + out) summed over 7 projections x 32 layers
    lora = estimate(shape, "lora", "bfloat16", rows=1, seq_len=2048, checkpointing=True)
    qlora = estimate(shape, "qlora", "bfloat16", rows=1, seq_len=2048, checkpointing=True)
    full = estimate(shape, "full", "bfloat16", rows=1, seq_len=2048, checkpointing=True)
    assert 14.9 < lora["weights_gib"] < 15.2  # bf16 weights + fp32 adapters
    assert 4.5 < qlora["weights_gib"] < 6.0   # NF4 linears, bf16 embeddings and head
    assert full["grads_optimizer_gib"] > 40 and lora["grads_optimizer_gib"] < 1
    no_ckpt = estimate(shape, "lora", "bfloat16", rows=1, seq_len=2048, checkpointing=False)
    assert no_ckpt["activations_gib"] > 5 * lora["activations_gib"]
    # torchtune publishes 16.2 GiB (LoRA) and 7.4 GiB (QLoRA) peak for this model at 2048 tokens
    assert 16 < lora["total_gib"] < 22 and 6 < qlora["total_gib"] < 12
