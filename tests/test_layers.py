"""The layers hold by a check: import-linter's contracts in pyproject.toml (the same that `make lint` runs)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    command = Path(sys.executable).parent / "lint-imports"
    if not command.is_file():
        command = shutil.which("lint-imports")
    if command is None:
        pytest.skip("import-linter is not installed (make test installs it with the test extra)")
    done = subprocess.run([str(command), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
