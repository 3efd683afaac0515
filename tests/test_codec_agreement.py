"""codec.agreement: how two encodings of the same audio are compared."""

from __future__ import annotations

import numpy as np
import torch

from tokpack.codec.agreement import TIE_EPSILON, compare_codes


def test_equal_codes_and_a_far_code(test_24khz):
    model = test_24khz.model
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 9_600)) * 0.1).float()
    with torch.inference_mode():
        emb = model.encoder(x)
        codes = model.quantizer.vq.encode(emb, n_q=8)[:, 0].numpy()
        same = compare_codes(model, emb, codes, codes.copy())
        assert (same.equal_fraction, same.differing_frames, same.tie_gaps) == (1.0, 0, [])
        assert same.all_near_ties
        other = codes.copy()
        # frame 3: level 2 replaced by the code farthest from its residual; frame 7: level 5
        book = model.quantizer.vq.layers[2]._codebook.embed
        residual = emb[0, :, 3] - sum(model.quantizer.vq.layers[j]._codebook.embed[codes[j, 3]]
                                      for j in range(2))
        other[2, 3] = int((book - residual).pow(2).sum(1).argmax())
        other[5:, 7] = (other[5:, 7] + 1) % 1024
        found = compare_codes(model, emb, codes, other)
    assert found.codes == codes.size and found.equal == codes.size - 1 - 3
    assert (found.frames, found.differing_frames, len(found.tie_gaps)) == (30, 2, 2)
    assert found.tie_gaps[0] > 100 * TIE_EPSILON  # not a near-tie
    assert not found.all_near_ties
