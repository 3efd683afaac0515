"""tokpack.formats stays light: standard library, numpy, zstandard, constriction and tokpack.errors."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALLOWED = {"numpy", "zstandard", "constriction", "tokpack"}
ALLOWED_TOKPACK = ("tokpack.errors", "tokpack.formats")


def imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def test_formats_imports_only_what_the_spec_allows():
    for path in sorted((ROOT / "tokpack" / "formats").glob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ALLOWED, f"{path.name} imports {name}"
            assert top != "tokpack" or name.startswith(ALLOWED_TOKPACK), (
                f"{path.name} imports {name}"
            )


def test_reading_tokens_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from tokpack.formats import read_tokens\n"
        f"tokens = read_tokens({str(ROOT / 'tests' / 'data' / 'tiny_24khz.tpk')!r})\n"
        "assert tokens.shape == (2, 5)\n"
        "heavy = ('torch', 'torchaudio', 'typer', 'rich', 'encodec', 'transformers')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
