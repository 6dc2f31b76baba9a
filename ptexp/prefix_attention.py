"""Putting a key/value prefix in at each self-attention module, for every family in :mod:`ptexp.families`.

The prefix never enters the token sequence: hidden states keep their length L, so the backbone computes its
own position ids (RoBERTa's and MPNet's start after the padding index), token types, masks and relative
positions exactly as without a prefix. Inside each prefixed self-attention the P prefix keys and values go in
front of the real ones, and the attention mask gains P columns that every query may attend to:

- ``interface`` families (BERT, RoBERTa/XLM-R/CamemBERT, ELECTRA, DistilBERT) call transformers' attention
  function by the name in their config. Each prefixed module gets its own config copy naming
  ``ptexp_prefix``, registered below: it concatenates the prefix and calls the function the backbone's own
  config names at that moment (eager, sdpa, or ptexp's fast-dropout SDPA), so masks are built as usual.
- MPNet and DeBERTa-v2/v3 compute attention inline; their self-attention ``forward`` is replaced on the
  instance by the functions below, which repeat the library's arithmetic with the prefix concatenated.
  Relative position terms (MPNet's bucketed bias, DeBERTa's c2p/p2c) stay those of the real tokens, and the
  P prefix columns get none (zero), as P-Tuning v2's DeBERTa code does: a prefix key has no position.
"""

from __future__ import annotations

import copy
import math
import types

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import eager_attention_forward
from transformers.models.deberta_v2.modeling_deberta_v2 import scaled_size_sqrt

from ptexp.families import Entry, Family, self_attentions

ATTENTION = "ptexp_prefix"


class PrefixSlot:
    """What one self-attention module reads during a forward: a (key, value) pair of (B, heads, P, head_dim)
    tensors, or None (no prefix this call). ``config`` is the backbone's own config."""

    def __init__(self, config):
        self.config = config
        self.key_value: tuple[torch.Tensor, torch.Tensor] | None = None


def pad_mask(mask: torch.Tensor | None, length: int) -> torch.Tensor | None:
    """``mask`` (..., query, key) with ``length`` attend-to columns in front: True for boolean masks, 0 for
    additive float masks, 1 for integer masks. None (attend everywhere) stays None."""
    if mask is None or length == 0:
        return mask
    fill = 0 if mask.is_floating_point() else 1
    return torch.cat([mask.new_full((*mask.shape[:-1], length), fill), mask], dim=-1)


def _with_prefix(slot: PrefixSlot, key: torch.Tensor, value: torch.Tensor, dim: int):
    """Key and value (heads on dim 1, sequence on ``dim``) with the slot's prefix in front; and its length."""
    if slot.key_value is None:
        return key, value, 0
    prefix_key, prefix_value = slot.key_value
    if dim != 2:  # DeBERTa folds batch and heads together: (B * heads, T, head_dim)
        prefix_key, prefix_value = (t.flatten(0, 1) for t in (prefix_key, prefix_value))
    key = torch.cat([prefix_key.to(key.dtype), key], dim=dim)
    value = torch.cat([prefix_value.to(value.dtype), value], dim=dim)
    return key, value, prefix_key.shape[-2]


def interface_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    """The attention function of prefixed modules: prefix in front, then the backbone's own function."""
    slot: PrefixSlot = module.ptexp_prefix
    key, value, length = _with_prefix(slot, key, value, dim=2)
    inner = ALL_ATTENTION_FUNCTIONS.get_interface(slot.config._attn_implementation, eager_attention_forward)
    return inner(module, query, key, value, pad_mask(attention_mask, length), **kwargs)


AttentionInterface.register(ATTENTION, interface_attention)


def mpnet_attention(self, hidden_states, attention_mask=None, position_bias=None, output_attentions=False, **kwargs):
    """``MPNetSelfAttention.forward`` (transformers 5.x) with the prefix; the position bias gets P zero columns."""
    hidden_shape = (*hidden_states.shape[:-1], -1, self.attention_head_size)
    q = self.q(hidden_states).view(hidden_shape).transpose(1, 2)
    k = self.k(hidden_states).view(hidden_shape).transpose(1, 2)
    v = self.v(hidden_states).view(hidden_shape).transpose(1, 2)
    k, v, length = _with_prefix(self.ptexp_prefix, k, v, dim=2)
    attention_scores = torch.matmul(q, k.transpose(-1, -2))
    attention_scores = attention_scores / math.sqrt(self.attention_head_size)
    if position_bias is not None:
        attention_scores += pad_mask(position_bias, length)  # zeros: prefix keys have no relative position
    if attention_mask is not None:
        attention_scores = attention_scores + pad_mask(attention_mask, length)
    attention_probs = self.dropout(nn.functional.softmax(attention_scores, dim=-1))
    c = torch.matmul(attention_probs, v).permute(0, 2, 1, 3).contiguous()
    o = self.o(c.view(*c.size()[:-2], self.all_head_size))
    return (o, attention_probs) if output_attentions else (o,)


def deberta_attention(
    self, hidden_states, attention_mask, output_attentions=False, query_states=None, relative_pos=None,
    rel_embeddings=None,
):  # fmt: skip
    """``DisentangledSelfAttention.forward`` (transformers 5.x) with the prefix: the content score covers prefix
    and real keys; the disentangled c2p/p2c terms are computed over the real keys only, prefix columns 0."""
    if query_states is None:
        query_states = hidden_states
    heads = self.num_attention_heads
    query_layer = self.transpose_for_scores(self.query_proj(query_states), heads)
    real_keys = self.transpose_for_scores(self.key_proj(hidden_states), heads)
    value_layer = self.transpose_for_scores(self.value_proj(hidden_states), heads)
    key_layer, value_layer, length = _with_prefix(self.ptexp_prefix, real_keys, value_layer, dim=1)
    scale_factor = 1 + ("c2p" in self.pos_att_type) + ("p2c" in self.pos_att_type)
    scale = scaled_size_sqrt(query_layer, scale_factor)
    attention_scores = torch.bmm(query_layer, key_layer.transpose(-1, -2) / scale.to(dtype=query_layer.dtype))
    if self.relative_attention:
        rel_embeddings = self.pos_dropout(rel_embeddings)
        rel_att = self.disentangled_attention_bias(query_layer, real_keys, relative_pos, rel_embeddings, scale_factor)
        attention_scores = attention_scores + pad_mask(rel_att, length)
    attention_scores = attention_scores.view(-1, heads, attention_scores.size(-2), attention_scores.size(-1))
    attention_mask = pad_mask(attention_mask.bool(), length)
    attention_scores = attention_scores.masked_fill(~attention_mask, torch.finfo(query_layer.dtype).min)
    attention_probs = self.dropout(nn.functional.softmax(attention_scores, dim=-1))
    context_layer = torch.bmm(attention_probs.view(-1, attention_probs.size(-2), attention_probs.size(-1)), value_layer)
    context_layer = context_layer.view(-1, heads, context_layer.size(-2), context_layer.size(-1)).permute(0, 2, 1, 3)
    context_layer = context_layer.contiguous()
    context_layer = context_layer.view(*context_layer.size()[:-2], -1)
    return (context_layer, attention_probs if output_attentions else None)


_FORWARDS = {Entry.mpnet: mpnet_attention, Entry.deberta: deberta_attention}


def install_prefix_slots(backbone: nn.Module, family: Family, first_layer: int) -> list[PrefixSlot]:
    """Make the self-attention of layers ``first_layer``.. read a prefix; one slot per prefixed layer."""
    slots = []
    for module in self_attentions(backbone, family)[first_layer:]:
        slot = PrefixSlot(backbone.config)
        module.ptexp_prefix = slot
        if family.entry == Entry.interface:
            module.config = copy.copy(module.config)  # this module alone dispatches to ``ptexp_prefix``
            module.config._attn_implementation = ATTENTION
        else:
            module.forward = types.MethodType(_FORWARDS[family.entry], module)
        slots.append(slot)
    return slots
