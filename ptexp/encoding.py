"""Tokenised splits and batches: :func:`encode` tokenises once (sentence pairs as pairs, with token type ids),
optionally cached on disk; :class:`LengthGroupedBatches` groups rows of similar length; :class:`Collator` pads.

A row's length is that of its whole encoding (both sides of a pair), so length grouping and the length-sorted
evaluation batches work on pairs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import BatchSampler, RandomSampler

if TYPE_CHECKING:
    from ptexp.tables import Split


@dataclass
class EncodedSplit:
    input_ids: list[list[int]]
    labels: list  # ints (classification) or floats (regression)
    token_type_ids: list[list[int]] | None = None  # sentence pairs only

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple:
        """``(input_ids, label)``, or ``(input_ids, label, token_type_ids)`` for a sentence pair."""
        if self.token_type_ids is None:
            return self.input_ids[index], self.labels[index]
        return self.input_ids[index], self.labels[index], self.token_type_ids[index]


def encode(split: Split, tokenizer, max_length: int, cache_dir: Path | None = None) -> EncodedSplit:
    """Tokenise every row once, truncated to ``max_length``, without padding.

    Sentence pairs are tokenised as pairs (``[CLS] a [SEP] b [SEP]``), truncating the longer side first so both
    keep tokens, with token type ids. With ``cache_dir`` the token ids are kept on disk, keyed by the tokenizer,
    the texts (and second texts) and ``max_length``, so the jobs of a sweep (and later runs) tokenise only once.
    """
    path = cache_dir / f"{token_cache_key(split, tokenizer, max_length)}.json" if cache_dir else None
    if path is not None and path.is_file():
        encoded = json.loads(path.read_text())
    else:
        encoded = _tokenize(split, tokenizer, max_length)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(encoded))
            os.replace(partial, path)  # atomic: parallel jobs never read a half-written file
    if isinstance(encoded, list):  # single sentences: the ids alone (the cache format before pairs existed)
        return EncodedSplit(input_ids=encoded, labels=list(split.labels))
    return EncodedSplit(encoded["input_ids"], list(split.labels), encoded["token_type_ids"])


def _tokenize(split: Split, tokenizer, max_length: int) -> list | dict:
    if split.text_pairs is None:
        return tokenizer(split.texts, truncation=True, max_length=max_length)["input_ids"]
    out = tokenizer(
        split.texts, split.text_pairs, truncation="longest_first", max_length=max_length, return_token_type_ids=True
    )
    return {"input_ids": out["input_ids"], "token_type_ids": out["token_type_ids"]}


def token_cache_key(split: Split, tokenizer, max_length: int) -> str:
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the whole fast tokenizer, less the truncation/padding state that calls set
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        identity = json.dumps(spec, sort_keys=True)
    else:
        identity = f"{type(tokenizer).__name__}:{tokenizer.name_or_path}:{len(tokenizer)}"
    pairs = () if split.text_pairs is None else ("\1pairs", *split.text_pairs)  # single sentences: keys as before
    for part in (identity, str(max_length), *split.texts, *pairs):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


class LengthGroupedBatches:
    """Batches of similar length, in random order: shuffle, cut into mega-batches of ``group`` batches,
    sort each by length, split into batches, shuffle the batches (as Hugging Face's ``group_by_length``).
    Padding drops sharply while every epoch still sees a new order. Seeded by ``generator``."""

    def __init__(self, lengths: list[int], batch_size: int, generator: torch.Generator, group: int = 50):
        self.lengths, self.batch_size, self.generator, self.group = lengths, batch_size, generator, group

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = []
        for start in range(0, len(order), span):
            mega = sorted(order[start : start + span], key=lambda i: self.lengths[i], reverse=True)
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        for index in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[index]


class Collator:
    """Pads a batch to its longest row (dynamic padding). Rows are :class:`EncodedSplit` items; the batch has
    ``token_type_ids`` only for sentence pairs, and float32 labels for regression (float labels)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch: list[tuple]) -> dict[str, torch.Tensor]:
        width = max(len(row[0]) for row in batch)
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        pairs = len(batch[0]) == 3
        token_type_ids = torch.zeros((len(batch), width), dtype=torch.long) if pairs else None
        for row, item in enumerate(batch):
            ids = item[0]
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
            if token_type_ids is not None:
                token_type_ids[row, : len(ids)] = torch.tensor(item[2], dtype=torch.long)
        labels = [item[1] for item in batch]
        dtype = torch.float32 if isinstance(labels[0], float) else torch.long
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": torch.tensor(labels, dtype=dtype)}
        return out if token_type_ids is None else {**out, "token_type_ids": token_type_ids}


def planned_steps(rows: int, t) -> int:
    """The optimizer steps a run of ``rows`` training rows takes: ``t.max_steps``, else ``t.epochs`` of batches."""
    batches = -(-rows // t.batch_size)
    return t.max_steps or math.ceil(round(batches * t.epochs, 6))  # round: 625 * 1.4 is 875.0000001


def make_batches(train_set: EncodedSplit, t, generator: torch.Generator):
    """An iterable of index lists, one per batch, reshuffled by ``generator`` on every pass."""
    if t.group_by_length:
        return LengthGroupedBatches([len(ids) for ids in train_set.input_ids], t.batch_size, generator)
    return BatchSampler(RandomSampler(train_set, generator=generator), t.batch_size, drop_last=False)
