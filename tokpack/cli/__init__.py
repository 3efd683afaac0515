"""Command-line interface; importing it does not import torch."""

from tokpack.cli.app import app, console, main

__all__ = ["app", "console", "main"]
