"""The click command class every tokpack command uses (its help as zstd and flac users
read it)."""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperCommand


class Command(TyperCommand):
    """Help as zstd and flac users read it: plain text in 80 columns, arguments shown by
    their metavar (``INPUT...``) without typer's type names (``<list[str]>``)."""

    def get_params(self, ctx: typer.Context) -> list:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperArgument):
                param.display_type_rich = lambda ctx: None  # typer >= 0.16 shows the type
        return params

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or param.name.upper()
                if param.nargs != 1 and not name.endswith("..."):
                    name += "..."
                pieces.append(name if param.required else f"[{name}]")
        return pieces
