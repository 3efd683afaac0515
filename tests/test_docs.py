"""Every command and option is documented in docs/CLI.md."""

from pathlib import Path

import pytest
import typer

from tokpack.cli import app

DOC = (Path(__file__).parents[1] / "docs" / "CLI.md").read_text()
GROUP = typer.main.get_command(app)


@pytest.mark.parametrize("name", sorted(GROUP.commands))
def test_command_and_options_documented(name):
    command = GROUP.commands[name]
    assert f"## `tokpack {name}" in DOC
    section = DOC.split(f"## `tokpack {name}", 1)[1].split("\n## ", 1)[0]
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("-") and opt not in ("--help", "-h"):
                assert f"`{opt}" in section or f" {opt}" in section or f"{opt}," in section, (name, opt)
