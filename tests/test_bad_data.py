"""Bad data files and data options (issue 22), along the CLI's own path in-process (``ptexp.__main__``: the early
checks, Hydra, the run folder, the tracker, the data, tokenizer and model): exit status 2, one ``error:`` line
with a ``valid:`` part naming the key or the file and line, no MLflow run, no run folder left. Valid files that
Python's ``str.splitlines`` used to cut (U+2028 in a JSONL string, U+0085 in an RTE row) train; empty texts and
a small selection split give one warning line.

Tiny files in GLUE's and SuperGLUE's layouts are written here; 40 rows of the real RTE copy in ../shared are
used where present (that test skips without it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import sys
from pathlib import Path

import pytest

import ptexp.__main__ as cli
from ptexp.data import load_dataset
from ptexp.errors import UserError
from ptexp.tables import parse_score, read_lines
from tests.conftest import ROOT, make_config, runs_in

GLUE_RTE = ROOT.parent / "shared" / "data" / "glue" / "RTE"
WORDS = ["good", "bad", "fine", "dull", "film", "plot", "actor", "story", "scene", "music", "slow", "fast"]
RTE_HEADER = ["index", "sentence1", "sentence2", "label"]
STSB_HEADER = ["index", "genre", "sentence1", "sentence2", "score"]
ROWS = 40


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))


def task_rows(task: str, rng: random.Random) -> tuple[list[str] | None, list[list[str]]]:
    """(header or None, rows) of a 40-row file in the layout of ``task``."""
    if task == "RTE":
        label = ("entailment", "not_entailment")
        return RTE_HEADER, [[str(i), sentence(rng), sentence(rng), rng.choice(label)] for i in range(ROWS)]
    if task == "STS-B":
        score = [f"{rng.uniform(0, 5):.3f}" for _ in range(ROWS)]
        return STSB_HEADER, [[str(i), "news", sentence(rng), sentence(rng), score[i]] for i in range(ROWS)]
    return None, [["gj04", str(i % 2), "" if i % 2 else "*", sentence(rng)] for i in range(ROWS)]  # CoLA


def write_tsv(path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(fields) + "\n" for fields in lines), encoding="utf-8")


def write_task(folder: Path, task: str, change=None) -> None:
    """train.tsv and dev.tsv of ``task``; ``change(rows)`` alters the train rows in place first."""
    folder.mkdir(parents=True)
    header, rows = task_rows(task, random.Random(0))
    if change is not None:
        change(rows)
    write_tsv(folder / "train.tsv", header, rows)
    write_tsv(folder / "dev.tsv", *task_rows(task, random.Random(1)))


def write_jsonl(folder: Path, change=None) -> None:
    """SuperGLUE RTE's train.jsonl and val.jsonl; ``change(rows)`` alters the train rows in place first."""
    folder.mkdir(parents=True)
    for name, seed in (("train.jsonl", 0), ("val.jsonl", 1)):
        rte = task_rows("RTE", random.Random(seed))[1]
        rows = [{"premise": a, "hypothesis": b, "label": y, "idx": int(i)} for i, a, b, y in rte]
        if change is not None and name == "train.jsonl":
            change(rows)
        (folder / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def setter(row: int, column: int | str, value):
    """A change that sets one field of one row (row 5 is line 7 of a file with a header)."""

    def change(rows):
        rows[row][column] = value

    return change


def write_files(d: Path) -> None:
    """Every file the cases point at ({D} in their arguments)."""
    write_task(d / "RTE", "RTE")
    write_task(d / "rte_fifth_field", "RTE", lambda rows: rows[5].append("stray"))
    write_task(d / "rte_short_row", "RTE", lambda rows: rows[5].pop())
    write_task(d / "rte_pairs_all_empty", "RTE", lambda rows: [r.__setitem__(2, "") for r in rows])
    write_task(d / "CoLA", "CoLA")
    write_task(d / "cola_short_row", "CoLA", lambda rows: rows[5].pop(2))
    for name, score in (("3_5", "3_5"), ("nan", "nan"), ("inf", "inf"), ("1e400", "1e400"), ("7.5", "7.5")):
        write_task(d / f"stsb_{name}", "STS-B", setter(5, 4, score))
    write_task(d / "stsb_below", "STS-B", setter(5, 4, "-0.5"))
    write_jsonl(d / "sg_hypothesis_object", setter(1, "hypothesis", {"text": "a dog ran"}))
    write_jsonl(d / "sg_premise_list", setter(1, "premise", ["a", "dog"]))
    write_jsonl(d / "sg_hypothesis_number", setter(1, "hypothesis", 3))
    write_jsonl(d / "sg_lacks_hypothesis", lambda rows: rows[1].pop("hypothesis"))
    (d / "glue_only_rte").mkdir()
    write_task(d / "glue_only_rte" / "RTE", "RTE")
    (d / "three.tsv").write_text("great film\tfine\t1\ndull film\tbad\t0\n")
    (d / "good.csv").write_text("sentence,label\ngreat film,1\ndull film,0\n")
    (d / "bad_cr.csv").write_text("sentence,label\ngreat film,1\ndull\rfilm,0\n")
    (d / "empty.csv").write_text("")
    (d / "latin1.tsv").write_bytes("sentence\tlabel\ncaf\xe9 au lait\t1\n".encode("latin-1"))


RTE, STSB, COLA, SG = "data=glue_rte", "data=glue_stsb", "data=glue_cola", "data=superglue_rte"
FILES = ["data=files", "data.eval_file={D}/good.csv"]

# id: (arguments, what the one line must contain). {D} is the folder of files.
CASES = {
    # 1. data.columns naming another number of columns than the file has
    "cola_three_names_for_four_columns": (
        [COLA, "data.data_dir={D}/CoLA", "data.columns=[source,label,sentence]"],
        ["data.columns: 3 names for the 4 fields of each row of", "valid: 4 names"],
    ),
    "four_names_on_a_three_column_file": (
        [
            "data=files",
            "data.train_file={D}/three.tsv",
            "data.eval_file={D}/three.tsv",
            "data.text_column=text",
            "data.columns=[text,text2,label,extra]",
        ],
        ["data.columns: 4 names for the 3 fields", "three.tsv", "valid: 3 names"],
    ),
    # 2. a row with more or fewer fields than the header (or data.columns)
    "tsv_row_with_a_fifth_field": (
        [RTE, "data.data_dir={D}/rte_fifth_field"],
        ["data.train_file", "rte_fifth_field/train.tsv line 7 has 5 fields where the header has 4", "valid: 4 tab"],
    ),
    "tsv_row_with_three_fields": (
        [RTE, "data.data_dir={D}/rte_short_row"],
        ["rte_short_row/train.tsv line 7 has 3 fields where the header has 4"],
    ),
    "headerless_row_with_three_fields": (
        [COLA, "data.data_dir={D}/cola_short_row"],
        ["cola_short_row/train.tsv line 6 has 3 fields where data.columns names 4"],
    ),
    "csv_with_a_carriage_return_in_a_field": (
        [*FILES, "data.train_file={D}/bad_cr.csv"],
        ["data.train_file", "bad_cr.csv line 3 is not CSV", 'valid: comma-separated fields, in "quotes"'],
    ),
    # 3. regression scores that float() reads but are not plain decimals, or outside the task's range
    **{
        f"stsb_score_{name}": (
            [STSB, f"data.data_dir={{D}}/stsb_{name}"],
            [f"stsb_{name}/train.tsv line 7: label '{name}' is not a plain decimal number", "valid: digits"],
        )
        for name in ("3_5", "nan", "inf", "1e400")
    },
    "stsb_score_above_range": (
        [STSB, "data.data_dir={D}/stsb_7.5"],
        ["stsb_7.5/train.tsv line 7: label '7.5' is outside data.label_range [0, 5]", "valid: a score 0 <= y <= 5"],
    ),
    "stsb_score_below_range": (
        [STSB, "data.data_dir={D}/stsb_below"],
        ["line 7: label '-0.5' is outside data.label_range [0, 5]"],
    ),
    # 4. JSONL texts that are not strings
    "jsonl_hypothesis_object": (
        [SG, "data.data_dir={D}/sg_hypothesis_object"],
        ["data.train_file", "train.jsonl line 2: 'hypothesis' is an object; valid: a JSON string"],
    ),
    "jsonl_premise_list": ([SG, "data.data_dir={D}/sg_premise_list"], ["line 2: 'premise' is an array"]),
    "jsonl_hypothesis_number": ([SG, "data.data_dir={D}/sg_hypothesis_number"], ["line 2: 'hypothesis' is a number"]),
    # 5. a text column empty in every row
    "every_second_text_empty": (
        [RTE, "data.data_dir={D}/rte_pairs_all_empty"],
        ["data.train_file", "rte_pairs_all_empty/train.tsv: 'sentence2' is empty in every row", "valid: a text"],
    ),
    # 6. data.max_length too small for the special tokens, or beyond the model's positions
    "max_length_2_on_pairs": (
        [RTE, "data.data_dir={D}/RTE", "data.max_length=2"],
        ["data.max_length: 2 cannot hold the 3 special tokens and a token of each text", "data.max_length >= 5"],
    ),
    "max_length_2_on_single_sentences": (
        ["data.max_length=2"],
        ["data.max_length: 2 cannot hold the 2 special tokens", "valid: data.max_length >= 3"],
    ),
    "max_length_beyond_positions": (
        ["data.max_length=1000"],
        ["data.max_length: 1000 tokens exceed the model's 512 positions", "valid: data.max_length <= 512"],
    ),
    "max_length_beyond_positions_with_prefix": (
        ["method=prefix", "prefix.shift_positions=true", "data.max_length=1000"],
        ["data.max_length: 1000 tokens exceed the model's 512 positions"],
    ),
    "prompt_and_max_length_beyond_positions": (
        ["method=prompt", "prefix_length=20", "data.max_length=500"],
        ["prefix_length: 20 + data.max_length 500 tokens exceed the model's 512 positions", "prefix_length <= 12"],
    ),
    # 9. the messages that lacked a valid part, and data.root blamed for its own folder
    "root_does_not_exist": (
        [RTE, "data.root=/nonexistent/glue"],
        ["data.root: folder /nonexistent/glue does not exist", "valid: a benchmark download's folder holding RTE/"],
    ),
    "root_without_the_task_folder": (
        [COLA, "data.root={D}/glue_only_rte"],
        ["data.root:", "glue_only_rte has no folder CoLA (folders there: RTE)", "valid:"],
    ),
    "data_dir_does_not_exist": (
        [RTE, "data.data_dir=/nonexistent/RTE"],
        ["data.data_dir: folder /nonexistent/RTE does not exist", "valid: a folder holding train.tsv, dev.tsv"],
    ),
    "file_not_found": ([*FILES, "data.train_file={D}/none.csv"], ["file not found", "valid: an existing .tsv"]),
    "no_data_rows": ([*FILES, "data.train_file={D}/empty.csv"], ["has no data rows; valid: a header line, then"]),
    "not_utf8": ([*FILES, "data.train_file={D}/latin1.tsv"], ["is not UTF-8 text", "valid: a UTF-8 encoded file"]),
    "jsonl_row_lacks_a_column": (
        [SG, "data.data_dir={D}/sg_lacks_hypothesis"],
        ["train.jsonl line 2 lacks 'hypothesis' (data.text_pair_column); valid: a value for each of"],
    ),
}


@contextlib.contextmanager
def argv(args: list[str]):
    old, sys.argv = sys.argv, ["ptexp", *args]
    try:
        yield
    finally:
        sys.argv = old


def run_main(args: list[str], monkeypatch) -> int:
    """``python -m ptexp ARGS``, in-process: the same early checks, then Hydra's main; returns the exit status.
    The root logger's handlers are put back after (Hydra's point at this test's captured stdout and run folder)."""
    monkeypatch.setenv("HYDRA_MAIN_MODULE", "__main__")  # Hydra finds conf/ beside ptexp/__main__.py, as with -m
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with argv(args):
            cli.check_group_choices(args)
            cli.check_value_types(args)
            cli.main()
    except SystemExit as exit_:
        return exit_.code
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)
    return 0


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The files, and ``outputs``: one MLflow store for every test here (a new store costs seconds)."""
    path = tmp_path_factory.mktemp("bad_data")
    write_files(path / "files")
    return path


def run_ids(store: Path) -> set[str]:
    return {run.info.run_id for run in runs_in(store)} if store.exists() else set()


BASE = ["model=tiny", "trainer.progress=false", "data.max_train_samples=16", "data.max_eval_samples=8"]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_data_exits_2_with_one_line_and_leaves_nothing(case, folder, monkeypatch, capsys):
    args, needles = CASES[case]
    out = folder / "outputs"  # one store for every test here: a new one costs seconds
    before = run_ids(out / "mlflow.db")
    args = [*BASE, *(a.replace("{D}", str(folder / "files")) for a in args), f"output_root={out}"]
    code = run_main(args, monkeypatch)
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    line = errors[0]
    assert "; valid: " in line and len(line) <= 400, line
    for needle in needles:
        assert needle in line, line
    assert run_ids(out / "mlflow.db") == before  # no run made, so none FAILED or RUNNING
    assert [p for p in out.glob("runs/**/*") if p.is_file()] == []  # and no run folder


@pytest.mark.parametrize(
    "value,ok",
    [("3.8", 3.8), ("5.000", 5.0), ("+0.5", 0.5), (".5", 0.5), ("3", 3.0), (" 4 ", 4.0), (2.5, 2.5), (4, 4.0),
     ("3_5", None), ("nan", None), ("inf", None), ("-inf", None), ("1e400", None), ("1e-3", None), ("0x1", None),
     (True, None), (math.nan, None), (None, None), ("", None)],
)  # fmt: skip
def test_scores_must_be_plain_finite_decimals(value, ok):
    if ok is None:
        with pytest.raises(UserError, match="is not a plain decimal number; valid"):
            parse_score(value, "here")
    else:
        assert parse_score(value, "here", (0.0, 5.0)) == ok


@pytest.mark.parametrize(
    "bad,message",
    [("[5,0]", "valid: two numbers [low, high] with low < high"), ("[0,1,2]", "two numbers"),
     ("[1]", "two numbers")],
)  # fmt: skip
def test_label_range_is_two_numbers_low_below_high(bad, message):
    with pytest.raises(UserError, match=r"^data.label_range: .*" + message.replace("[", r"\[")):
        load_dataset(make_config("data=glue_stsb", f"data.label_range={bad}").data)
    with pytest.raises(UserError, match=r"data.label_range: .* is for regression scores; valid: null"):
        load_dataset(make_config("data.label_range=[0,5]").data)


@pytest.mark.parametrize("character", ["\x85", "\u2028", "\u2029", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"])
def test_lines_end_at_newlines_only(tmp_path, character):
    path = tmp_path / "lines.tsv"
    path.write_bytes(f"a{character}b\tc\r\nd\te\n".encode())
    assert read_lines(path, "k") == [f"a{character}b\tc", "d\te"]


def test_empty_texts_warn_once_with_their_count_and_the_file(folder, tmp_path, capsys):
    def empty_some(rows):
        for row in rows[:3]:
            row[2] = ""
        rows[7][1] = " "

    write_task(tmp_path / "RTE", "RTE", empty_some)
    data = load_dataset(make_config(RTE, f"data.data_dir={tmp_path / 'RTE'}").data)
    assert len(data.train) == ROWS and data.train.text_pairs[:3] == ["", "", ""]  # kept, as the warning says
    lines = capsys.readouterr().err.strip().splitlines()
    train = tmp_path / "RTE" / "train.tsv"
    assert lines == [
        f"[ptexp] warning: data.train_file: {train}: 'sentence1' is empty in 1 of 40 rows; they are kept as they are",
        f"[ptexp] warning: data.train_file: {train}: 'sentence2' is empty in 3 of 40 rows; they are kept as they are",
    ]


def test_hub_texts_missing_in_every_row_are_an_error(tmp_path):
    """The hub code path (datasets.load_dataset) on a local folder, whose empty CSV fields come back as None."""
    for split in ("train", "validation"):
        (tmp_path / f"{split}.csv").write_text("sentence1,sentence2,label\na,,1\nb,,0\n")
    with pytest.raises(UserError) as info:
        load_dataset(make_config(RTE, f"data.hub_path={tmp_path}", "data.hub_name=null").data)
    assert str(info.value) == (
        f"data.hub_train_split: {tmp_path}/train: 'sentence2' is empty in every row; valid: a text in 'sentence2'"
    )


@pytest.mark.parametrize(
    "option,rows,warned",
    [("data.selection_fraction=0.001", 1, True), ("data.selection_rows=1", 1, True),
     ("data.selection_rows=49", 49, True), ("data.selection_rows=50", 50, False)],
)  # fmt: skip
def test_a_selection_split_under_50_rows_warns(capsys, option, rows, warned):
    data = load_dataset(make_config(option).data)
    assert len(data.selection) == rows
    err = capsys.readouterr().err.strip()
    if warned:
        assert err.startswith(f"[ptexp] warning: {option.replace('=', ': ')} gives a selection split of {rows} row")
        assert "50 or more are advised" in err and len(err.splitlines()) == 1, err
    else:
        assert err == ""


def with_u2028(rows):
    rows[3]["premise"] = "a line\u2028 separator and a paragraph\u2029 separator inside a string"


def with_u0085(folder: Path) -> None:
    """40 rows of the real RTE copy in ../shared (or, without it, written ones) with U+0085 (NEL) inside row 5."""
    if not GLUE_RTE.is_dir():
        write_task(folder, "RTE", setter(5, 1, "a sentence with\x85 a next-line character"))
        return
    folder.mkdir()
    for name in ("train.tsv", "dev.tsv"):
        lines = (GLUE_RTE / name).read_text(encoding="utf-8").split("\n")[: ROWS + 1]
        if name == "train.tsv":
            lines[6] = lines[6].replace(" ", " \x85", 1)
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("layout", ["superglue_rte_u2028", "glue_rte_u0085"])
def test_valid_files_with_unicode_line_separators_train(layout, folder, tmp_path, monkeypatch, capsys):
    if layout == "glue_rte_u0085":
        with_u0085(tmp_path / "data")
        preset, text = RTE, "\x85"
    else:
        write_jsonl(tmp_path / "data", with_u2028)
        preset, text = SG, "\u2028"
    data = load_dataset(make_config(preset, f"data.data_dir={tmp_path / 'data'}").data)
    assert len(data.train) == ROWS and any(text in t for t in data.train.texts)
    out = folder / "outputs"
    before = run_ids(out / "mlflow.db")
    args = [*BASE, preset, f"data.data_dir={tmp_path / 'data'}", "data.selection_rows=4", "trainer.select_best=true",
            "trainer.max_steps=2", "trainer.batch_size=4", "data.max_length=32", f"output_root={out}",
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    assert run_main(args, monkeypatch) == 0, capsys.readouterr().err
    (run,) = [r for r in runs_in(out / "mlflow.db") if r.info.run_id not in before]
    assert run.info.status == "FINISHED" and run.data.metrics["data/train_rows"] == 16
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == [
        "[ptexp] warning: data.selection_rows: 4 gives a selection split of 4 rows, too few to tell one step from "
        "another; 50 or more are advised"
    ]
