"""Codec families behind one interface (:class:`tokpack.codecs.base.LoadedModel`).

One sub-package per family, each with a ``load(spec, weights, device)`` that returns a
ready :class:`~tokpack.codecs.base.LoadedModel`:

* ``encodec``: Meta's EnCodec (the ``encodec`` package): streamed SEANet, 1 s segments at
  48 kHz, its .ecdc file format and its entropy-coding LM;
* ``mimi``: Kyutai's Mimi through ``transformers`` (causal: streamed);
* ``dac``: Descript's DAC through ``transformers`` (not causal: windowed).

The engine, batch, bench and train-prior talk only to the interface; which family a
model belongs to is data in the registry (:attr:`ModelSpec.family`). Importing this
package imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.util

from tokpack.errors import ModelError

#: family -> the pip extra it needs beyond tokpack's own dependencies
FAMILIES = {"encodec": None, "mimi": "codecs", "dac": "codecs"}


def family_module(family: str):
    """The sub-package of ``family``; ModelError naming the extra when its library is
    not installed."""
    if family not in FAMILIES:
        raise ModelError(f"unknown codec family {family!r}")
    extra = FAMILIES[family]
    if extra is not None and importlib.util.find_spec("transformers") is None:
        raise ModelError(f"the {family} codec needs transformers: pip install 'tokpack[{extra}]'")
    return importlib.import_module(f"tokpack.codecs.{family}")
