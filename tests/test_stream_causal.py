"""The streamed causal model (test_24khz): codes independent of how the signal is fed,
agreeing with one pass (docs/PERFORMANCE.md, "Determinism"), audio within rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokpack.codecs.encodec import framing, streaming
from tokpack.codec.agreement import compare_codes
from tokpack.codec.threads import torch_threads

#: odd lengths, and the first conv's piece/reserve boundary (20475 + 20475) +- 1
LENGTHS = [1, 319, 320, 321, 20_000, 40_949, 40_950, 40_951, 47_519, 47_520, 47_521,
           53_760, 61_425, 100_001]


def signal(n: int, seed: int = 0) -> torch.Tensor:
    """[1, n]: a random walk (speech-like spectrum tilt), peak well below 1."""
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.standard_normal(n)) * 0.01
    x -= np.linspace(x[0], x[-1], n) if n > 1 else 0.0
    return torch.from_numpy((0.5 * x / max(1e-9, np.abs(x).max())).astype(np.float32))[None]


def streamed_codes(model, x: torch.Tensor, n_q: int, pieces) -> np.ndarray:
    """Codes of ``x`` fed to a CausalEncoder in pieces of the sizes ``pieces`` yields
    (an int: all that size)."""
    if isinstance(pieces, int):
        pieces = [pieces] * -(-x.shape[1] // pieces)
    enc = streaming.CausalEncoder(model, n_q)
    parts, a = [], 0
    for size in pieces:
        if a >= x.shape[1]:
            break
        parts.append(enc.feed(x[:, a:a + size]))
        a += size
    parts.append(enc.feed(x[:, a:]))
    parts.append(enc.finish())
    return np.concatenate(parts, axis=1)


def streamed_embedding(model, x: torch.Tensor) -> torch.Tensor:
    """The streamed encoder's embedding [1, D, T] (what CausalEncoder quantizes)."""
    net = streaming.StreamedNet(streaming._plan(model, "encoder"))
    parts = net.step(x[None], final=False) + net.step(x[None, :, :0], final=True)
    return torch.cat(parts, dim=-1)


def ragged(n: int, seed: int) -> list[int]:
    """Piece sizes from 1 to 9,000 samples covering n (the way a pipe might deliver)."""
    sizes = np.random.default_rng(seed).integers(1, 9_000, size=n // 500 + 2)
    sizes[:: 7] = 1
    return sizes.tolist()


@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_codes_do_not_depend_on_the_pieces(test_24khz, threads):
    """Guaranteed on every CPU: however the signal is fed, the encoder makes the same
    calls (pieces of fixed sizes, set by the total length alone), so the same codes."""
    model = test_24khz.model
    with torch_threads(threads), torch.inference_mode():
        for n in LENGTHS:
            x = signal(n, seed=n)
            want = streamed_codes(model, x, 8, 1 << 20)
            assert want.shape == (8, -(-n // 320))
            for pieces in (7_777, ragged(n, seed=n)):
                got = streamed_codes(model, x, 8, pieces)
                assert np.array_equal(got, want), (n, pieces if isinstance(pieces, int) else "ragged")


@pytest.mark.parametrize("threads", [1, 2])
def test_streamed_codes_agree_with_one_pass(test_24khz, threads):
    """Measured, not guaranteed: the one-pass encoder's calls have other shapes, so on
    some CPUs (and thread counts) oneDNN rounds them differently. At least 97 % of the
    codes are equal, and where a frame differs, its first differing code was a near-tie.
    A signal short enough for one call is the one-pass computation itself: equal."""
    model = test_24khz.model
    with torch_threads(threads), torch.inference_mode():
        for n in LENGTHS:
            x = signal(n, seed=n)
            emb = model.encoder(x[None])
            want = model.quantizer.vq.encode(emb, n_q=32)[:, 0].numpy()
            streamed = streamed_embedding(model, x)
            got = streamed_codes(model, x, 32, 7_777)
            assert np.array_equal(
                got, model.quantizer.vq.encode(streamed, n_q=32)[:, 0].numpy())
            assert float((streamed - emb).abs().max()) <= 1e-4 * float(emb.abs().max()), n
            agreement = compare_codes(model, emb, want, got)
            assert agreement.equal_fraction >= 0.97, (n, agreement.equal_fraction)
            assert agreement.all_near_ties, (n, agreement.tie_gaps)
            if n < streaming.one_call_samples(model):  # torch's own ELU there too
                assert torch.equal(streamed, emb), n
                assert agreement.equal == agreement.codes, n


def test_codes_at_1_and_2_threads_agree(test_24khz):
    """Measured, not guaranteed: oneDNN splits a call's work between threads by its shape,
    so 1 and 2 threads may round differently (and do on some CPUs); the bound as above."""
    model = test_24khz.model
    x = signal(100_001, seed=2)
    with torch.inference_mode():
        with torch_threads(1):
            emb = streamed_embedding(model, x)
            one = streamed_codes(model, x, 32, 1 << 20)
        with torch_threads(2):
            two = streamed_codes(model, x, 32, 1 << 20)
        agreement = compare_codes(model, emb, one, two)
    assert agreement.equal_fraction >= 0.97 and agreement.all_near_ties, agreement


def test_streamed_codes_agree_with_encodecs_own_encode(test_24khz):
    """... and with encodec's EncodecModel.encode (whose weights are not folded): the
    same bound."""
    model = test_24khz.model
    x = signal(60_000, seed=1)
    with torch.inference_mode():
        got = streamed_codes(model, x, 32, 10_000)
        from tokpack.codecs.encodec.architecture import build_architecture

        ref = build_architecture(test_24khz.spec)  # weight_norm, as encodec builds it
        ref.load_state_dict(torch.load(test_24khz.weights_path, weights_only=True))
        ref.set_target_bandwidth(24.0)
        (codes, _), = ref.encode(x[None])
        agreement = compare_codes(model, ref.encoder(x[None]), codes[0].numpy(), got)
    assert agreement.equal_fraction >= 0.97 and agreement.all_near_ties, agreement


def test_empty_stream_runs_nothing(test_24khz):
    enc = streaming.CausalEncoder(test_24khz.model, 8)
    with torch.inference_mode():
        assert enc.feed(torch.zeros(1, 0)).shape == (8, 0)
        assert enc.finish().shape == (8, 0)
    dec = streaming.CausalDecoder(test_24khz.model)
    with torch.inference_mode():
        assert dec.finish().shape == (1, 0)


def snr_db(want: np.ndarray, got: np.ndarray) -> float:
    err = np.sum((want.astype(np.float64) - got) ** 2)
    return float("inf") if err == 0 else 10 * np.log10(np.sum(want.astype(np.float64) ** 2) / err)


@pytest.mark.parametrize("threads", [pytest.param(1, marks=pytest.mark.slow), 2])  # 1: 15 s
def test_streamed_decoder(test_24khz, threads):
    """Any feeding gives the same bits as one call; within float rounding of encodec's
    decoder (the transposed convolutions are computed as 2-tap convolutions)."""
    model = test_24khz.model
    rng = np.random.default_rng(threads)
    with torch_threads(threads), torch.inference_mode():
        for t in (1, 156, 1179, 1180):  # 1024 + 155: the first stage's first piece
            codes = rng.integers(0, 1024, (8, t)).astype(np.uint16)
            one = streaming.CausalDecoder(model)
            whole = torch.cat([one.feed(codes), one.finish()], dim=-1).numpy()
            assert whole.shape == (1, 320 * t)
            dec = streaming.CausalDecoder(model)
            parts = [dec.feed(codes[:, a:a + 97]) for a in range(0, t, 97)] + [dec.finish()]
            assert np.array_equal(torch.cat(parts, dim=-1).numpy(), whole), t
            ref = framing.decode_frames(model, codes).numpy()
            assert np.abs(ref - whole).max() <= 1e-5 * max(1.0, float(np.abs(ref).max()))
            assert snr_db(ref, whole) > 100, t


def test_folded_weights_are_the_hooks_weights(test_24khz):
    """fold_weight_norm_state computes exactly what the weight-norm hook computes."""
    from tokpack.codecs.encodec.architecture import build_architecture, fold_weight_norm_state

    state = torch.load(test_24khz.weights_path, weights_only=True)
    ref = build_architecture(test_24khz.spec)
    ref.load_state_dict(state)
    folded = fold_weight_norm_state(dict(state))
    conv = ref.encoder.model[0].conv.conv
    for hook in conv._forward_pre_hooks.values():
        hook(conv, None)  # what every forward does: recompute conv.weight from g and v
    assert torch.equal(folded["encoder.model.0.conv.conv.weight"], conv.weight)
    plain = dict(test_24khz.model.named_parameters())
    assert not any(k.endswith(("_g", "_v")) for k in plain)
    for key, value in folded.items():
        if key in plain:
            assert torch.equal(plain[key], value), key


def test_stage_pieces_meet_the_size_rule(test_24khz):
    """Every streamed call but a whole short signal's stays on oneDNN's side of torch's
    size rule (the condition for bit-identical codes; see streaming's module doc)."""
    for part in ("encoder", "decoder"):
        net = streaming.StreamedNet(streaming._plan(test_24khz.model, part))
        for stage in net.stages:
            layer = stage.layer
            assert stage.piece >= layer.min_len and stage.reserve == layer.min_len
            assert stage.piece % layer.stride == 0
            parts = layer.layers + [layer.shortcut] if isinstance(
                layer, streaming._ResBlock) else [layer]
            for p in parts:
                if isinstance(p, (streaming._Conv, streaming._ConvTr)):
                    context = p.pt if isinstance(p, streaming._Conv) else 1
                    assert p.channels * (layer.min_len + context) > streaming.MKLDNN_MIN_NUMEL
