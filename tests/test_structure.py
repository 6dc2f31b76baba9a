"""The structure check (``scripts/check_structure.py``, a step of ``make lint``): it passes on this checkout, and it
catches a cycle through a lazy import, an import from a higher layer, and a module or function over budget, in
``ptexp/`` and in ``benchmarks/`` and ``scripts/`` (there the size budgets only)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "check_structure.py"


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_this_checkout_has_no_import_cycle_and_keeps_the_budgets():
    proc = check("--verbose")
    assert proc.returncode == 0, proc.stderr
    assert "structure ok" in proc.stdout
    assert "longest function:" in proc.stdout and "largest module:" in proc.stdout


def write(root: Path, name: str, text: str, folder: str = "ptexp") -> None:
    path = root / folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_lazy_import_cycle_a_higher_layer_import_and_oversized_code_fail(tmp_path):
    write(tmp_path, "__init__.py", "")
    write(tmp_path, "errors.py", "class UserError(Exception):\n    pass\n")
    write(tmp_path, "store.py", "from ptexp.errors import UserError\n")
    # config <- methods <- (lazily) config: a cycle, and config reaching up to the methods
    write(tmp_path, "config.py", "def validate():\n    from ptexp.methods import METHODS\n\n    return METHODS\n")
    write(tmp_path, "methods/__init__.py", "from ptexp import config\n\nMETHODS = {}\n")
    body = "".join(f"    x{i} = {i}\n" for i in range(85))
    write(tmp_path, "loop.py", f"def train():\n{body}    return 0\n" + "\n" * 220)
    # outside ptexp/ only the sizes count: a top-level import of a sibling module is in no layer, and that is fine
    write(tmp_path, "common.py", "ROOT = 1\n", folder="benchmarks")
    write(tmp_path, "speed.py", "from common import ROOT\n\n\ndef main():\n" + body + "\n" * 220, "benchmarks")
    write(tmp_path, "tool.py", "\n" * 301, folder="scripts")
    proc = check("--root", str(tmp_path))
    assert proc.returncode == 1
    problems = proc.stderr.splitlines()
    assert "import cycle: ptexp.config <-> ptexp.methods" in problems
    assert "ptexp/config.py: imports ptexp.methods, a module of a higher layer" in problems
    assert "ptexp/loop.py:1: function train has 87 lines; budget 80" in problems
    assert "ptexp/loop.py: 307 lines; budget 300" in problems
    assert "benchmarks/speed.py:4: function main has 86 lines; budget 80" in problems
    assert "benchmarks/speed.py: 309 lines; budget 300" in problems
    assert "scripts/tool.py: 301 lines; budget 300" in problems
    assert len(problems) == 7, problems  # store.py importing errors, a lower layer, is fine


def test_the_method_registry_loads_no_torch_so_the_cli_checks_every_option_first():
    """The command line imports every method module (for their options) before its cheap checks: none may pull in
    torch, transformers or PEFT at import (README, "Adding a method")."""
    heavy = ("torch", "transformers", "peft")
    code = f"import sys, ptexp.__main__, ptexp.methods; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
