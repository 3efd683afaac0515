"""Every command and option is documented in docs/CLI.md."""

from pathlib import Path

import pytest
import typer

from tokpack.cli import app

DOC = (Path(__file__).parents[1] / "docs" / "CLI.md").read_text()
GROUP = typer.main.get_command(app)
#: every command by its full name; a group's (``tokpack dataset``) by their own
COMMANDS = {}
for _name in GROUP.list_commands(None):
    _command = GROUP.get_command(None, _name)
    for _sub, _leaf in getattr(_command, "commands", {_name: _command}).items():
        COMMANDS[_name if _sub == _name else f"{_name} {_sub}"] = _leaf


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_and_options_documented(name):
    command = COMMANDS[name]
    assert f"## `tokpack {name}" in DOC
    section = DOC.split(f"## `tokpack {name}", 1)[1].split("\n## ", 1)[0]
    for param in command.params:
        for opt in param.opts:
            if opt.startswith("-") and opt not in ("--help", "-h"):
                assert f"`{opt}" in section or f" {opt}" in section or f"{opt}," in section, (name, opt)
