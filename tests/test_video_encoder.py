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
