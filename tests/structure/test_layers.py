"""The layers and folder rules of pyproject.toml's [tool.importlinter] contracts hold.

import-linter reads the import graph of the `timeline` namespace (and bench/)
statically; a broken contract names the import chain that breaks it.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).parent / "lint-imports"
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_installing_adds_one_top_level_name():
    """The wheel's only top-level package is `timeline` (the card's folders are linked into it)."""
    import tomllib

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert conf["include"] == ["timeline*"]
    for folder in ("dsl", "workflows", "activities", "producers", "feeder"):
        link = ROOT / "timeline" / folder
        assert link.is_symlink() and link.resolve() == (ROOT / folder).resolve(), folder
