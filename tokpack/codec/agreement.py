"""How two encodings of the same audio agree: equal codes, and near-ties where they differ
(imports torch).

Two computations of the same encoder (one pass and streamed pieces, 1 and 2 threads, one
CPU and another) give embeddings that differ by float rounding (~1e-7 relative), because
oneDNN picks its kernels, and splits work between threads, by the shape of each call and
by the CPU. The residual quantizer then picks another code wherever two codes are
equally near to within that rounding, and every later codebook of that frame quantizes
another residual. docs/PERFORMANCE.md ("Determinism") says what is guaranteed and what
is measured; the tests check the measured part with :func:`compare_codes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: A code choice is a near-tie when the two codes' squared distances to the residual r
#: differ by at most this fraction of |e| |a - b| + |r|^2 + |a|^2 + |b|^2, with e the
#: frame's embedding and a, b the two code vectors: rounding moves r by a fraction of |e|
#: (which moves the difference by up to 2 |dr| |a - b|), and the quantizer's float32
#: |r|^2 - 2 r.a + |a|^2 rounds on the scale of its terms. Rounding is ~1e-6 of that scale
#: (measured: gaps up to ~1e-5 where codes differ); a real choice is far outside it.
TIE_EPSILON = 1e-4


@dataclass
class CodeAgreement:
    """Codes ``a`` and ``b`` [K, T] of the same audio."""

    codes: int  # K * T
    equal: int  # positions where a == b
    frames: int  # T
    differing_frames: int  # frames with any code different
    #: for each differing frame, at its first differing codebook, with r the residual of
    #: ``emb`` there: |d(r, a) - d(r, b)| on the scale of :data:`TIE_EPSILON`
    tie_gaps: list[float]

    @property
    def equal_fraction(self) -> float:
        return self.equal / self.codes if self.codes else 1.0

    @property
    def max_tie_gap(self) -> float:
        return max(self.tie_gaps, default=0.0)

    @property
    def all_near_ties(self) -> bool:
        return self.max_tie_gap <= TIE_EPSILON


def compare_codes(model, emb: torch.Tensor, a: np.ndarray, b: np.ndarray) -> CodeAgreement:
    """Compare codes ``a`` (the quantizer's codes of ``emb`` [D, T] or [1, D, T]) with ``b``.

    A frame's first differing codebook is where the two computations parted; the gap
    there, computed in float64 from ``emb``, says whether it was a near-tie. Later
    codebooks of that frame quantize different residuals and are not compared.
    """
    import torch

    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"codes of shapes {a.shape} and {b.shape}")
    emb = emb.reshape(emb.shape[-2], emb.shape[-1]).detach().to("cpu", torch.float64)
    layers = model.quantizer.vq.layers
    differ = a != b
    frames = np.flatnonzero(differ.any(axis=0))
    gaps = []
    for t in frames:
        k = int(np.flatnonzero(differ[:, t])[0])
        r = emb[:, t].clone()
        for j in range(k):
            r -= layers[j]._codebook.embed[int(a[j, t])].double()
        book = layers[k]._codebook.embed
        ea, eb = book[int(a[k, t])].double(), book[int(b[k, t])].double()
        da, db = float((r - ea).pow(2).sum()), float((r - eb).pow(2).sum())
        scale = float(emb[:, t].norm() * (ea - eb).norm()
                      + r.pow(2).sum() + ea.pow(2).sum() + eb.pow(2).sum())
        gaps.append(abs(da - db) / scale if scale > 0 else float("inf"))
    return CodeAgreement(codes=a.size, equal=int((~differ).sum()), frames=a.shape[-1],
                         differing_frames=len(frames), tie_gaps=gaps)
