"""Packing must not leak attention between examples: the per-token loss of a packed batch equals
the loss of each example run alone, on tiny randomly initialised models built from config."""
import pytest
import torch
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM)

from webtune.train.collate import IGNORE, PackedCollator, block_causal_mask

TOL = 1e-5
VOCAB = 300
SMALL = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def make_example(gen, n, prompt):
    ids = torch.randint(1, VOCAB, (n,), generator=gen).tolist()
    return {"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]}


@pytest.fixture(scope="module")
def examples():
    gen = torch.Generator().manual_seed(0)
    sizes = [(13, 4), (7, 2), (21, 6), (9, 3)]  # (tokens, prompt tokens)
    return [make_example(gen, n, p) for n, p in sizes]


def llama(impl):
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMALL, attn_implementation=impl)).eval()


def token_losses(logits, labels):
    """Per-position next-token loss (0 where the target is ignored), like transformers' shift."""
    tgt = labels[:, 1:]
    lp = torch.log_softmax(logits[:, :-1].float(), -1)
    nll = -lp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(tgt == IGNORE, torch.zeros_like(nll), nll)


def alone_losses(model, ex):
    ids = torch.tensor([ex["input_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return token_losses(logits, torch.tensor([ex["labels"]]))[0]


def packed_vs_alone(model, rows, batch):
    """Largest |packed - alone| per-token loss over every example of every row."""
    with torch.no_grad():
        out = model(**batch)
    packed = token_losses(out.logits, batch["labels"])
    worst = 0.0
    for r, row in enumerate(rows):
        at = 0
        for ex in row:
            n = len(ex["input_ids"])
            # inside the row, position at+j predicts at+j+1: the example's own n-1 predictions
            mine = packed[r, at:at + n - 1]
            worst = max(worst, (mine - alone_losses(model, ex)).abs().max().item())
            at += n
    return worst, out


def mean_alone_loss(model, rows):
    total, count = 0.0, 0
    for row in rows:
        for ex in row:
            lab = torch.tensor(ex["labels"][1:])
            total += alone_losses(model, ex).sum().item()
            count += int((lab != IGNORE).sum())
    return total / count


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_packed_loss_equals_unpacked(impl, examples):
    model = llama(impl)
    rows = [examples[:3], [examples[3]]]  # the second row is padded
    batch = PackedCollator.for_model(model)(rows)
    assert batch["attention_mask"].shape == (2, 1, 41, 41)
    worst, out = packed_vs_alone(model, rows, batch)
    assert worst < TOL
    # the loss the trainer sees is the token mean of the examples alone
    assert out.loss.item() == pytest.approx(mean_alone_loss(model, rows), abs=TOL)


def test_packed_gradients_equal_unpacked(examples):
    """A training step sees the same gradients packed as unpacked (summed token losses)."""
    model = llama("sdpa").train()
    rows = [examples[:3], [examples[3]]]
    batch = PackedCollator.for_model(model)(rows)
    token_losses(model(**batch).logits, batch["labels"]).sum().backward()
    packed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for ex in examples:
        logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits
        token_losses(logits, torch.tensor([ex["labels"]])).sum().backward()
    for g_packed, p in zip(packed, model.parameters()):
        assert torch.allclose(g_packed, p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_position_ids_without_mask_do_not_isolate(impl, examples):
    """Control: restarting position ids with no mask lets the later examples see the earlier ones."""
    model = llama(impl)
    rows = [examples[:3]]
    batch = PackedCollator.for_model(model)(rows)
    del batch["attention_mask"]
    worst, _ = packed_vs_alone(model, rows, batch)
    assert worst > 1e-3


def test_labels_positions_and_padding(examples):
    rows = [examples[:2], [examples[2]]]
    b = PackedCollator(pad_token_id=0)(rows)
    n0, n1, n2 = 13, 7, 21
    assert b["input_ids"].shape == (2, n2)
    assert b["position_ids"][0, :n0 + n1].tolist() == list(range(n0)) + list(range(n1))
    # each example's first token is never a target; padding never is
    assert b["labels"][0, n0].item() == IGNORE
    assert b["labels"][0, n0 + 1:n0 + n1].tolist() == examples[1]["labels"][1:]
    assert (b["labels"][0, n0 + n1:] == IGNORE).all()
    assert (b["input_ids"][0, n0 + n1:] == 0).all()
    m = b["attention_mask"][0, 0]
    assert m[n0, n0] and not m[n0, n0 - 1]          # example 1 cannot see example 0
    assert m.any(-1).all()                          # no query row (padding included) fully masked


def test_eager_mask_is_additive_float():
    seg = torch.tensor([[0, 0, 1]])
    m = PackedCollator("eager", dtype=torch.bfloat16).attention_mask(seg)
    assert m.dtype == torch.bfloat16
    M = torch.finfo(torch.bfloat16).min
    assert m[0, 0].tolist() == [[0, M, M], [0, 0, M], [M, M, 0]]


def test_sliding_window_mask():
    m = block_causal_mask(torch.zeros(1, 5, dtype=torch.long), window=2)[0, 0]
    assert m[4].tolist() == [False, False, False, True, True]


def test_flash_flattens_without_padding(examples):
    b = PackedCollator("flash_attention_2")([examples[:2], [examples[2]]])
    assert "attention_mask" not in b
    assert b["input_ids"].shape == (1, 13 + 7 + 21)
    assert b["position_ids"][0].tolist() == list(range(13)) + list(range(7)) + list(range(21))
    assert b["labels"][0, 13].item() == IGNORE and b["labels"][0, 20].item() == IGNORE


def test_bad_example_names_row_and_example(examples):
    bad = {"input_ids": [1, 2, 3], "labels": [1, 2]}
    with pytest.raises(ValueError, match="row 1, example 0"):
        PackedCollator()([examples[:1], [bad]])


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_gemma3_sliding_layers_isolate(impl, examples):
    # window 4 < example lengths, so the sliding layers' own window must be in the mask
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"],
                           max_position_embeddings=256, attn_implementation=impl)
    model = Gemma3ForCausalLM(cfg).eval()
    rows = [examples[:3], [examples[3]]]
    batch = PackedCollator.for_model(model)(rows)
    assert set(batch["attention_mask"]) == {"full_attention", "sliding_attention"}
    assert packed_vs_alone(model, rows, batch)[0] < TOL
    # without the window the sliding layers would see too much: the test can tell
    batch["attention_mask"]["sliding_attention"] = batch["attention_mask"]["full_attention"]
    assert packed_vs_alone(model, rows, batch)[0] > 1e-3


def test_mistral_sliding_window_isolates(examples):
    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(**SMALL, sliding_window=5, attn_implementation="sdpa")).eval()
    rows = [examples[:3], [examples[3]]]
    batch = PackedCollator.for_model(model)(rows)
    assert packed_vs_alone(model, rows, batch)[0] < TOL


@pytest.mark.slow  # flex attention compiles its kernel on CPU: ~45 s
def test_flex_attention_isolates_with_position_ids(examples):
    model = llama("flex_attention")
    model.config.use_cache = False  # transformers derives the document BlockMask only without a cache
    rows = [examples[:3], [examples[3]]]
    batch = PackedCollator.for_model(model)(rows)
    assert "attention_mask" not in batch
    assert packed_vs_alone(model, rows, batch)[0] < TOL
