"""kinema's own video encoder for offline evaluation (kinema.eval.video_encoder; issue 13)."""

import math

import numpy as np
import pytest
import torch

from kinema.errors import KinemaError
from kinema.eval.distances import distances
from kinema.eval.features import extract, sha256_of
from kinema.eval.video_encoder import EncoderConfig, VideoEncoder, contrastive_loss, encoder_batch, load_encoder, train_encoder

TINY = EncoderConfig(channels=(8, 8), dim=16, frames=4, size=16)


def test_contrastive_loss_known_values():
    b = 4
    one_hot = torch.eye(b)
    keys = torch.arange(b)
    # uniform logits: log B; perfectly aligned and sharp: about 0
    assert contrastive_loss(torch.ones(b, 4), torch.ones(b, 4), keys, torch.tensor(0.0)).item() == pytest.approx(math.log(b))
    assert contrastive_loss(one_hot, one_hot, keys, torch.tensor(math.log(100.0))).item() < 1e-3
    # two clips of one caption are each other's positives: their swap costs nothing
    keys = torch.tensor([0, 0, 1, 2])
    text = one_hot.clone()
    text[1] = one_hot[0]
    assert contrastive_loss(one_hot[[0, 0, 2, 3]], text, keys, torch.tensor(math.log(100.0))).item() == pytest.approx(
        math.log(2) / 2, abs=1e-3)  # each of the pair splits its target over two equal logits


def test_encoder_batches_mix_both_levels_from_their_own_seeds():
    videos, captions = encoder_batch(0, 4)
    assert videos.shape == (4, 17, 64, 64, 3) and videos.dtype == np.uint8
    from kinema.data.captions import parse_canonical
    from kinema.data.scenes import parse_scene

    assert all(parse_canonical(c) is not None for c in captions[0::2])  # level 1 at even places
    assert all(parse_scene(c) is not None for c in captions[1::2])  # level 2 (one or two objects) at odd
    again, _ = encoder_batch(0, 4)
    assert np.array_equal(videos, again) and not np.array_equal(videos, encoder_batch(1, 4)[0])


class _KnownRetrieval:
    """Clip i's feature is one-hot at `index[i]`, and prompt p's is one-hot at p: prompt p ranks
    first the first clip whose index is p (ties go to the lowest clip), or clip 0 if none is."""

    def __init__(self, index, dim):
        self.index, self.dim = index, dim

    def __call__(self, videos):
        return np.eye(self.dim)[self.index]

    def text(self, pooled):
        return np.eye(self.dim)[pooled.astype(int)]


class _IndexText:
    def __call__(self, prompts):
        return type("Out", (), {"pooled": np.array([int(p.split()[1]) for p in prompts])})()


def test_retrieval_known_r_at_1_and_its_interval():
    """8 distinct prompts; clips 0-5 carry their own prompt's feature, clips 6 and 7 carry prompt 0's.
    So prompts 0-5 retrieve a clip with their prompt and 6, 7 do not: R@1 = 6 / 8, with a bootstrap
    interval over the 8 queries that holds it and is wide (8 queries); all right gives [1, 1]."""
    from kinema.eval.video_encoder import retrieval

    prompts = [f"prompt {i}" for i in range(8)]
    videos = np.zeros((8, 1))
    r = retrieval(_KnownRetrieval([0, 1, 2, 3, 4, 5, 0, 0], 8), videos, prompts, _IndexText())
    assert r["r_at_1"] == 0.75
    assert r["r_at_1_low"] < 0.75 < r["r_at_1_high"] and r["r_at_1_high"] - r["r_at_1_low"] > 0.3
    right = retrieval(_KnownRetrieval(list(range(8)), 8), videos, prompts, _IndexText())
    assert (right["r_at_1"], right["r_at_1_low"], right["r_at_1_high"]) == (1.0, 1.0, 1.0)


def test_train_export_load_and_extract(tmp_path):
    out = train_encoder(tmp_path / "enc", steps=3, batch_size=4, device="cpu", precision="fp32", cfg=TINY)
    extractor = load_encoder(out)
    assert extractor.spec.weights == sha256_of(out / "encoder.safetensors") and extractor.spec.dim == 16
    videos, _ = encoder_batch(5, 6)
    stats = extract(extractor, videos, batch_size=4)
    assert stats.features.shape == (6, 16) and np.isfinite(stats.features).all()
    assert distances(stats, stats)["FD-kinema-shapes-video-encoder"] == pytest.approx(0.0, abs=1e-6)
    # a killed run continues: two more steps from the checkpoint
    train_encoder(tmp_path / "enc", steps=5, batch_size=4, device="cpu", precision="fp32", cfg=TINY, resume=True)
    assert load_encoder(out).spec.weights != extractor.spec.weights
    with pytest.raises(KinemaError, match="no trained video encoder"):
        load_encoder(tmp_path / "nothing")


def test_the_encoder_sees_time():
    """Time reversal changes the features (the convolutions run over time, not per frame)."""
    torch.manual_seed(0)
    model = VideoEncoder(TINY).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x.flip(2)), atol=1e-4)


def test_the_shipped_encoder_retrieves_and_sees_shuffled_time():
    """The shipped encoder (src/kinema/weights/video-encoder) on 48 held-out-seed Shapes clips, as
    docs/evaluation.md measured it on 256: retrieval well above chance (1/48) that collapses under
    time reversal, and a Fréchet distance that rises far above the real-versus-real floor under
    frame shuffling. A retrained or wrongly loaded encoder fails here."""
    from kinema.config import TextConfig
    from kinema.data import shapes
    from kinema.data.captions import canonical_caption
    from kinema.eval import corruptions
    from kinema.eval.video_encoder import SHIPPED, retrieval
    from kinema.pipelines.registry import resolve
    from kinema.text.encoders import load_text_encoder

    extractor = load_encoder(SHIPPED)
    assert extractor.spec.weights == sha256_of(resolve(SHIPPED) / "encoder.safetensors")
    seen = shapes.combos(held_out=False)

    def clip_set(offset):
        combos = [seen[i % len(seen)] for i in range(48)]
        videos = [shapes.sample_clip(95_000_000 + offset + i, c, frames=17, size=64)[0] for i, c in enumerate(combos)]
        return np.stack(videos), [canonical_caption(*c) for c in combos]

    (ref, _), (other, prompts) = clip_set(0), clip_set(10_000)
    ref_stats = extract(extractor, ref)
    fd = "FD-kinema-shapes-video-encoder"
    floor = distances(extract(extractor, other), ref_stats)[fd]
    shuffled = np.stack([corruptions.shuffle(v, seed=i) for i, v in enumerate(other)])
    assert floor < 4.0 and distances(extract(extractor, shuffled), ref_stats)[fd] > 8 * floor  # 1.9 and 30.3
    text_encoder = load_text_encoder(TextConfig())
    assert retrieval(extractor, other, prompts, text_encoder)["r_at_1"] > 0.45  # 0.65
    assert retrieval(extractor, other[:, ::-1].copy(), prompts, text_encoder)["r_at_1"] < 0.15  # 0.04
