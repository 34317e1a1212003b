"""The README's Python snippets run as they are, in order, in a fresh folder; its quick start and the
commands it names exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # name the block that failed
            pytest.fail(f"README python block {i + 1} fails: {type(exc).__name__}: {exc}\n{block}")
    assert (tmp_path / "ben.store" / "benmm-store.json").is_file()
    assert not list(tmp_path.glob("*.partial"))


def test_python_dash_m_benmm_is_the_command() -> None:
    out = subprocess.run([sys.executable, "-m", "benmm", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("benmm "), out.stderr
