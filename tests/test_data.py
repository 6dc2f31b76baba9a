"""Data loading: the embedded set, GLUE-format TSVs, CSV/JSONL files, the hub code path on a local folder, errors."""

from __future__ import annotations

import json

import pytest
import torch

from ptexp.data import Collator, encode, load_dataset
from ptexp.errors import UserError
from ptexp.models import load_tokenizer
from tests.conftest import make_config


def data_cfg(*overrides: str):
    return make_config(*overrides).data


def write_glue_tsv(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{text} \t{label}\n" for text, label in rows), encoding="utf-8")


GLUE_ROWS = [
    ('it \'s a "charming" and often affecting journey', 1),
    ("unflinchingly bleak and desperate", 0),
    ("the acting , costumes , music are all superb", 1),
    ("a sour little movie", 0),
]


def test_embedded_data_has_both_splits_both_labels_and_no_overlap():
    data = load_dataset(data_cfg())
    assert len(data.train) >= 200 and len(data.eval) >= 80
    assert set(data.train.labels) == set(data.eval.labels) == {0, 1}
    assert not set(data.train.texts) & set(data.eval.texts)
    assert data.label_names == ["negative", "positive"]


def test_sst2_reads_local_glue_tsvs_with_bare_quotes(tmp_path):
    write_glue_tsv(tmp_path / "train.tsv", GLUE_ROWS)
    write_glue_tsv(tmp_path / "dev.tsv", GLUE_ROWS[:2])
    data = load_dataset(data_cfg("data=sst2", f"data.data_dir={tmp_path}"))
    assert data.train.texts[0] == 'it \'s a "charming" and often affecting journey'
    assert data.train.labels == [1, 0, 1, 0] and len(data.eval) == 2
    assert data.train.origin == str(tmp_path / "train.tsv")


def test_hub_code_path_loads_a_local_dataset_folder(tmp_path):
    """The same datasets.load_dataset call that fetches glue/sst2 online, pointed at a local folder."""
    folder = tmp_path / "my_sst2"
    folder.mkdir()
    for split, rows in (("train", GLUE_ROWS), ("validation", GLUE_ROWS[1:])):
        lines = ["sentence,label"] + [f'"{t.replace(chr(34), chr(34) * 2)}",{y}' for t, y in rows]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(data_cfg("data=sst2", f"data.hub_path={folder}", "data.hub_name=null"))
    assert data.train.labels == [1, 0, 1, 0] and data.eval.labels == [0, 1, 0]
    assert data.train.texts[0].startswith('it \'s a "charming"')


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".tsv"])
def test_generic_files_with_named_columns_and_label_names(tmp_path, suffix):
    rows = [("great value", "positive"), ("broke in a day", "negative"), ("fine, I guess", "neutral")]
    path = tmp_path / f"reviews{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"body": t, "stars": y}) + "\n" for t, y in rows))
    else:
        sep = "," if suffix == ".csv" else "\t"
        body = "".join(f'"{t}"{sep}{y}\n' if sep == "," else f"{t}{sep}{y}\n" for t, y in rows)
        path.write_text(f"body{sep}stars\n" + body)
    cfg = data_cfg(
        "data=files",
        f"data.train_file={path}",
        f"data.eval_file={path}",
        "data.text_column=body",
        "data.label_column=stars",
        "data.label_names=[negative,neutral,positive]",
    )
    data = load_dataset(cfg)
    assert data.train.texts == [t for t, _ in rows]
    assert data.train.labels == [2, 0, 1]


def test_subsets_are_fixed_by_subset_seed_not_by_run_seed():
    a = load_dataset(make_config("data.max_train_samples=50", "seed=1").data)
    b = load_dataset(make_config("data.max_train_samples=50", "seed=2").data)
    c = load_dataset(make_config("data.max_train_samples=50", "data.subset_seed=7").data)
    assert a.train.texts == b.train.texts and len(a.train) == 50
    assert a.train.texts != c.train.texts


def files_cfg(tmp_path, content: bytes | str, suffix=".tsv", *extra):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return data_cfg("data=files", f"data.train_file={path}", f"data.eval_file={path}", *extra)


@pytest.mark.parametrize(
    "content,suffix,extra,message",
    [
        ("text\tlabel\nfine\t1\n", ".tsv", (), "data.text_column: column 'sentence' not in"),
        ("sentence\tlabel\nfine\t7\n", ".tsv", (), "label '7' is not in the label set; valid: 0..1"),
        ("sentence\tlabel\nfine\tmaybe\n", ".tsv", (), "label 'maybe'"),
        ("", ".tsv", (), "has no data rows"),
        ("sentence\tlabel\n", ".tsv", (), "has no data rows"),
        (b"sentence\tlabel\ncaf\xe9\t1\n", ".tsv", (), "not UTF-8"),
        ("{not json}\n", ".jsonl", (), "line 1 is not JSON"),
        ("sentence\tlabel\nok\t1\n", ".parquet", (), "unknown file type '.parquet'"),
        (
            "sentence\tlabel\nok\t1\n",
            ".tsv",
            ("data.label_column=stars",),
            "data.label_column: column 'stars'",
        ),
    ],
)
def test_bad_files_give_one_line_errors_naming_key_and_file(tmp_path, content, suffix, extra, message):
    with pytest.raises(UserError) as info:
        load_dataset(files_cfg(tmp_path, content, suffix, *extra))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_names_the_key_and_path(tmp_path):
    cfg = data_cfg("data=sst2", f"data.data_dir={tmp_path}")
    with pytest.raises(UserError, match=r"data.train_file: file not found: .*train.tsv"):
        load_dataset(cfg)


def test_collator_pads_each_batch_to_its_longest_row():
    cfg = make_config("model=tiny")
    tokenizer = load_tokenizer(cfg.model)
    data = load_dataset(cfg.data)
    encoded = encode(data.train, tokenizer, max_length=12)
    assert max(len(ids) for ids in encoded.input_ids) <= 12
    rows = [encoded[0], encoded[1], encoded[2]]
    batch = Collator(tokenizer.pad_token_id)(rows)
    width = max(len(ids) for ids, _ in rows)
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum(1).tolist() == [len(ids) for ids, _ in rows]
    assert torch.equal(batch["labels"], torch.tensor([label for _, label in rows]))
    assert bool((batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all())


def test_length_grouped_batches_cover_every_row_once_cut_padding_and_depend_on_the_seed():
    from ptexp.data import LengthGroupedBatches

    lengths = [int(x) for x in torch.randint(3, 60, (1000,), generator=torch.Generator().manual_seed(0))]

    def epoch(seed: int) -> list[list[int]]:
        return list(LengthGroupedBatches(lengths, 32, torch.Generator().manual_seed(seed), group=10))

    batches = epoch(1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == len(LengthGroupedBatches(lengths, 32, torch.Generator())) == 32
    assert epoch(1) == batches and epoch(2) != batches

    def padding(batch_list):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batch_list)

    shuffled = torch.randperm(1000, generator=torch.Generator().manual_seed(1)).tolist()
    plain = [shuffled[i : i + 32] for i in range(0, 1000, 32)]
    assert padding(batches) < 0.2 * padding(plain)


def test_token_cache_is_reused_and_keyed_by_tokenizer_texts_and_length(tmp_path, monkeypatch):
    cfg = make_config("model=tiny")
    tokenizer = load_tokenizer(cfg.model)
    split = load_dataset(cfg.data).train
    first = encode(split, tokenizer, 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 1
    assert first.input_ids == encode(split, tokenizer, 32).input_ids

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(type(tokenizer), "__call__", no_tokenizing)
    assert encode(split, tokenizer, 32, cache_dir=tmp_path).input_ids == first.input_ids
    monkeypatch.undo()
    encode(split, tokenizer, 16, cache_dir=tmp_path)
    shorter = type(split)(split.texts[:-1], split.labels[:-1], split.origin)
    encode(shorter, tokenizer, 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 3


def task_files(tmp_path, header: str, *rows: str, dev=True):
    for name in ("train.tsv", "dev.tsv") if dev else ("train.tsv",):
        (tmp_path / name).write_text(header + "\n" + "".join(f"{row}\n" for row in rows), encoding="utf-8")
    return str(tmp_path)


@pytest.mark.parametrize(
    "preset,header,row,extra,message",
    [
        (
            "glue_rte",
            "index\tsentence1\tlabel",
            "0\ta\tentailment",
            (),
            "data.text_pair_column: column 'sentence2' not in",
        ),
        ("glue_stsb", "sentence1\tsentence2\tscore", "a\tb\thigh", (), "label 'high' is not a plain decimal number"),
        ("glue_stsb", "sentence1\tsentence2\tscore", "a\tb\tnan", (), "label 'nan' is not a plain decimal number"),
        (
            "glue_rte",
            "index\tsentence1\tsentence2\tlabel",
            "0\ta\tb\tneutral",
            (),
            "label 'neutral' is not in the label set; valid: 0..1 or entailment, not_entailment (data.label_names)",
        ),
        (
            "glue_cola",
            "gj04\t1\t\tIt rains.",
            "gj04\t0\t*\tRains it.",
            ("data.columns=null",),
            "found: gj04, 1, , It rains.; the file seems to have no header line: name its columns in order with data.",
        ),
        (
            "glue_rte",
            "index\tsentence1\tsentence2\tlabel",
            "0\ta\tb\tentailment",
            ("data.selection_rows=1",),
            "data.selection_rows: 1 (1 rows) leaves no training rows: train has 1; valid: fewer than 1 rows",
        ),
        (
            "glue_rte",
            "index\tsentence1\tsentence2\tlabel",
            "0\ta\tb\tentailment",
            ("data.selection_rows=1", "data.selection_fraction=0.5"),
            "data.selection_rows: set together with data.selection_fraction=0.5; valid: only one of them",
        ),
        (
            "glue_rte",
            "index\tsentence1\tsentence2\tlabel",
            "0\ta\tb\tentailment",
            ("data.selection_fraction=1.5",),
            "data.selection_fraction: 1.5; valid: null or a fraction 0 < f < 1",
        ),
    ],
)
def test_bad_task_data_gives_one_line_errors(tmp_path, preset, header, row, extra, message):
    cfg = data_cfg(f"data={preset}", f"data.data_dir={task_files(tmp_path, header, row)}", *extra)
    with pytest.raises(UserError) as info:
        load_dataset(cfg)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_preset_folder_without_a_split_names_the_key_and_what_is_there(tmp_path):
    header, row = "index\tsentence1\tsentence2\tlabel", "0\ta\tb\tentailment"
    folder = task_files(tmp_path, header, row, dev=False)
    with pytest.raises(UserError) as info:
        load_dataset(data_cfg("data=glue_rte", f"data.data_dir={folder}"))
    assert str(info.value).startswith("data.eval_file: file not found: ") and "dev.tsv" in str(info.value)
    assert "files there: train.tsv" in str(info.value)
    (tmp_path / "dev_matched.tsv").write_text("index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tneutral\n")
    (tmp_path / "train.tsv").write_text("index\tsentence1\tsentence2\tgold_label\n0\ta\tb\tneutral\n")
    with pytest.raises(UserError, match=r"^data.extra_evals.mismatched.file: file not found: .*dev_mismatched.tsv"):
        load_dataset(data_cfg("data=glue_mnli", f"data.data_dir={folder}"))
