"""Tasks beyond single sentences: GLUE/SuperGLUE presets on local files in the original layouts (real GLUE copies
in ../shared when present, small fixtures otherwise), sentence-pair encoding and batches, the selection split."""

from __future__ import annotations

import json

import pytest
import torch

from ptexp.config import Task
from ptexp.data import Collator, encode, load_dataset, token_cache_key
from ptexp.models import load_tokenizer
from tests.conftest import ROOT, make_config

GLUE_DIR = ROOT.parent / "shared" / "data" / "glue"


def data_cfg(*overrides: str):
    return make_config(*overrides).data


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason="needs ../shared/data/glue")
@pytest.mark.parametrize(
    "preset,folder,rows,first_label",
    [
        ("glue_rte", "RTE", (2490, 277), 1),
        ("glue_mrpc", "MRPC", (3668, 408), 1),
        ("glue_stsb", "STS-B", (5749, 1500), 5.0),
        ("glue_cola", "CoLA", (8551, 1043), 1),
    ],
)
def test_real_glue_copies_give_glues_row_counts(preset, folder, rows, first_label):
    data = load_dataset(data_cfg(f"data={preset}", f"data.data_dir={GLUE_DIR / folder}"))
    assert (len(data.train), len(data.eval)) == rows
    assert data.train.labels[0] == first_label
    assert (data.train.text_pairs is None) == (preset == "glue_cola")
    if preset == "glue_mrpc":  # the BOM-prefixed header was read: the label column was found
        assert data.train.texts[0].startswith("Amrozi accused his brother")
    if preset == "glue_stsb":
        assert data.task == Task.regression and data.num_labels == 1 and data.label_names == []
        assert all(isinstance(y, float) and 0 <= y <= 5 for y in data.eval.labels)


def write_tsv(path, header: list[str] | None, rows: list[list[str]], final_newline=True, bom=False):
    lines = (["\t".join(header)] if header else []) + ["\t".join(r) for r in rows]
    path.write_text(("\ufeff" if bom else "") + "\n".join(lines) + ("\n" if final_newline else ""), encoding="utf-8")


def test_glue_layouts_bom_header_headerless_and_mixed_floats(tmp_path):
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write_tsv(
        mrpc / "train.tsv", header, [["1", "7", "8", 'he said " yes', "he agreed"], ["0", "1", "2", "a", "b"]], bom=True
    )
    write_tsv(mrpc / "dev.tsv", header, [["0", "3", "4", "c", "d"]], bom=True)
    data = load_dataset(data_cfg("data=glue_mrpc", f"data.data_dir={mrpc}"))
    assert data.train.texts == ['he said " yes', "a"] and data.train.text_pairs == ["he agreed", "b"]
    assert data.train.labels == [1, 0] and data.eval.labels == [0]

    cola = tmp_path / "CoLA"
    cola.mkdir()
    write_tsv(cola / "train.tsv", None, [["gj04", "1", "", "It rains."], ["gj04", "0", "*", "Rains it the."]])
    write_tsv(cola / "dev.tsv", None, [["cj99", "0", "*", "Him left."]], final_newline=False)
    data = load_dataset(data_cfg("data=glue_cola", f"data.data_dir={cola}"))
    assert data.train.texts == ["It rains.", "Rains it the."] and data.train.labels == [1, 0]
    assert data.eval.texts == ["Him left."] and data.train.text_pairs is None

    stsb = tmp_path / "STS-B"
    stsb.mkdir()
    header = ["index", "genre", "sentence1", "sentence2", "score"]
    rows = [["0", "news", "a", "b", "5.000"], ["1", "news", "c", "d", "3"], ["2", "news", "e", "f", "2.11111111111111"]]
    write_tsv(stsb / "train.tsv", header, rows)
    write_tsv(stsb / "dev.tsv", header, rows[:1])
    data = load_dataset(data_cfg("data=glue_stsb", f"data.data_dir={stsb}"))
    assert data.train.labels == [5.0, 3.0, 2.11111111111111] and data.train.text_pairs == ["b", "d", "f"]


def test_mnli_reads_matched_and_mismatched_dev_sets(tmp_path):
    header = ["index", "sentence1", "sentence2", "gold_label"]
    write_tsv(tmp_path / "train.tsv", header, [["0", "p", "h", "neutral"], ["1", "p2", "h2", "contradiction"]])
    write_tsv(tmp_path / "dev_matched.tsv", header, [["0", "m", "mh", "entailment"]])
    write_tsv(tmp_path / "dev_mismatched.tsv", header, [["0", "x", "xh", "contradiction"], ["1", "y", "yh", "neutral"]])
    data = load_dataset(data_cfg("data=glue_mnli", f"data.data_dir={tmp_path}"))
    assert data.train.labels == [1, 2] and data.eval.labels == [0] and data.eval.text_pairs == ["mh"]
    assert list(data.extra_evals) == ["mismatched"]
    assert data.extra_evals["mismatched"].labels == [2, 1] and data.extra_evals["mismatched"].texts == ["x", "y"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "preset,rows,labels",
    [
        (
            "superglue_boolq",
            [
                {"question": "is it", "passage": "It is.", "idx": 0, "label": True},
                {"question": "q", "passage": "p", "idx": 1, "label": False},
            ],
            [1, 0],
        ),
        (
            "superglue_cb",
            [
                {"premise": "a", "hypothesis": "b", "label": "neutral", "idx": 0},
                {"premise": "c", "hypothesis": "d", "label": "contradiction", "idx": 1},
            ],
            [2, 1],
        ),
        (
            "superglue_rte",
            [
                {"premise": "a", "hypothesis": "b", "label": "not_entailment", "idx": 0},
                {"premise": "c", "hypothesis": "d", "label": "entailment", "idx": 1},
            ],
            [1, 0],
        ),
    ],
)
def test_superglue_jsonl_layout(tmp_path, preset, rows, labels):
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "val.jsonl", rows[:1])
    data = load_dataset(data_cfg(f"data={preset}", f"data.data_dir={tmp_path}"))
    assert data.train.labels == labels and len(data.eval) == 1
    assert data.train.text_pairs == [r.get("passage", r.get("hypothesis")) for r in rows]


def test_hub_code_path_reads_pairs_floats_and_extra_splits_from_a_local_folder(tmp_path):
    """The datasets.load_dataset call that fetches nyu-mll/glue online, pointed at a local folder."""
    for split, scores in (("train", [0.5, 4.0]), ("validation", [3.2]), ("test", [1.0])):
        lines = ["sentence1,sentence2,label"] + [f"a{i},b{i},{s}" for i, s in enumerate(scores)]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    cfg = data_cfg(
        "data=glue_stsb", f"data.hub_path={tmp_path}", "data.hub_name=null", "+data.extra_evals={x:{hub_split:test}}"
    )
    data = load_dataset(cfg)
    assert data.train.labels == [0.5, 4.0] and data.train.text_pairs == ["b0", "b1"]
    assert data.eval.labels == [3.2] and data.extra_evals["x"].texts == ["a0"]


def test_selection_split_is_carved_from_train_the_same_for_every_run_seed():
    def load(*extra):
        return load_dataset(make_config("data.selection_rows=40", *extra).data)

    full = load_dataset(make_config().data).train
    a, b, c = load("seed=1"), load("seed=2", "method=prefix"), load("data.subset_seed=3")
    assert len(a.selection) == 40 and len(a.train) == len(full) - 40
    assert sorted(a.train.texts + a.selection.texts) == sorted(full.texts)
    assert not set(a.train.texts) & set(a.selection.texts)
    assert a.selection.texts == b.selection.texts and a.train.texts == b.train.texts
    assert a.selection.texts != c.selection.texts
    part = load_dataset(make_config("data.selection_fraction=0.1").data)
    assert len(part.selection) == round(0.1 * len(full)) and load_dataset(make_config().data).selection is None


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(make_config("model=tiny").model)


def pair_split(tmp_path, first: list[str], second: list[str], labels: list):
    """An RTE-layout (names) or STS-B-layout (float scores) train split of these pairs."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    regression = isinstance(labels[0], float)
    header = ["index", "sentence1", "sentence2", "score" if regression else "label"]
    rows = [["0", a, b, str(y)] for a, b, y in zip(first, second, labels, strict=True)]
    for name in ("train.tsv", "dev.tsv"):
        write_tsv(tmp_path / name, header, rows)
    preset = "glue_stsb" if regression else "glue_rte"
    return load_dataset(data_cfg(f"data={preset}", f"data.data_dir={tmp_path}")).train


def test_pairs_encode_as_pairs_and_truncation_keeps_both_sides(tmp_path, tokenizer):
    long = " ".join(["word"] * 50)
    split = pair_split(tmp_path, ["the cat sat", long], ["a dog ran", "short one"], ["entailment", "not_entailment"])
    encoded = encode(split, tokenizer, max_length=16)
    ids, types = encoded.input_ids[0], encoded.token_type_ids[0]
    assert tokenizer.decode(ids) == "[CLS] the cat sat [SEP] a dog ran [SEP]"
    assert types == [0] * 5 + [1] * 4
    ids, types = encoded.input_ids[1], encoded.token_type_ids[1]
    assert len(ids) == 16 and tokenizer.decode(ids).endswith("[SEP] short one [SEP]")  # the long side was cut
    assert encoded[1] == (ids, 1, types)


def test_collator_emits_token_types_for_pairs_only_and_float_labels_for_regression(tmp_path, tokenizer):
    split = pair_split(tmp_path, ["a b c", "d"], ["e", "f g"], [4.5, 1.0])
    encoded = encode(split, tokenizer, 32)
    batch = Collator(tokenizer.pad_token_id)([encoded[0], encoded[1]])
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [4.5, 1.0]
    width = max(len(ids) for ids in encoded.input_ids)
    assert batch["token_type_ids"].shape == (2, width)
    assert batch["token_type_ids"][1].tolist()[: len(encoded.input_ids[1])] == encoded.token_type_ids[1]
    assert batch["token_type_ids"][batch["attention_mask"] == 0].sum() == 0
    single = load_dataset(make_config().data).train
    assert "token_type_ids" not in Collator(0)([encode(single, tokenizer, 16)[0]])


def test_token_cache_is_keyed_by_the_pair(tmp_path, tokenizer):
    a = pair_split(tmp_path / "a", ["x y"], ["first"], ["entailment"])
    b = pair_split(tmp_path / "b", ["x y"], ["second"], ["entailment"])
    assert token_cache_key(a, tokenizer, 32) != token_cache_key(b, tokenizer, 32)
    single = type(a)(a.texts, a.labels, a.origin)
    assert token_cache_key(single, tokenizer, 32) != token_cache_key(a, tokenizer, 32)
    cache = tmp_path / "cache"
    first = encode(a, tokenizer, 32, cache_dir=cache)
    again = encode(a, tokenizer, 32, cache_dir=cache)
    assert len(list(cache.glob("*.json"))) == 1
    assert (again.input_ids, again.token_type_ids) == (first.input_ids, first.token_type_ids)
    assert again.token_type_ids == [[0, 0, 0, 0, 1, 1]]


def test_glue_sst2_is_the_sst2_preset():
    assert make_config("data=glue_sst2").data == make_config("data=sst2").data
