"""Command-line interface; importing it does not import torch."""

from tokpack.cli.app import app, main

__all__ = ["app", "main"]
