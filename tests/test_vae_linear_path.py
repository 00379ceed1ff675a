"""The linear coder beside the VAE (kinema.vae.linear_path): PCA's reconstruction exactly at the
start, and the VAE's causality, streaming, tiling and image property kept."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import randomize_

from kinema.config import VAE_PRESETS
from kinema.vae.autoencoder import CausalVAE
from kinema.vae.coding import CodingPlan
from kinema.vae.linear_path import fit_pca

CFG = dataclasses.replace(VAE_PRESETS["tiny"], linear_path=True)  # 4x4x4, 4 latent channels


def video(n: int = 2, t: int = 3, h: int = 5, w: int = 4, seed: int = 0) -> torch.Tensor:
    """[n, 3, 1 + r (t - 1), h s, w s] for a latent grid (t, h, w)."""
    r, s = CFG.time_compression, CFG.space_compression
    return torch.randn(n, 3, 1 + r * (t - 1), h * s, w * s, generator=torch.Generator().manual_seed(seed))


def numpy_pca_round_trip(fit: np.ndarray, x: np.ndarray, k: int, r: int, s: int) -> np.ndarray:
    """Project every latent position's patch of x onto the top k principal components of fit's
    patches, with plain numpy reshapes (frame 0 in s x s patches, later frames in r x s x s ones)."""
    def cut(v, first):  # [N, C, T, H, W] -> [N * positions, D]
        n, c, frames, hh, ww = v.shape
        v = v[:, :, :1] if first else v[:, :, 1:]
        f = 1 if first else r
        v = v.reshape(n, c, v.shape[2] // f, f, hh // s, s, ww // s, s)
        return v.transpose(0, 2, 4, 6, 1, 3, 5, 7).reshape(-1, c * f * s * s), v.shape

    def paste(rows, shape):
        n, c, t, f, h, p, w, q = shape
        return rows.reshape(n, t, h, w, c, f, p, q).transpose(0, 4, 1, 5, 2, 6, 3, 7).reshape(n, c, t * f, h * p, w * q)

    out = []
    for first in (True, False):
        train, _ = cut(fit, first)
        rows, shape = cut(x, first)
        mean = train.mean(0)
        basis = np.linalg.svd(train - mean, full_matrices=False)[2][:k]  # [k, D]
        out.append(paste((rows - mean) @ basis.T @ basis + mean, shape))
    return np.concatenate(out, axis=2)


@torch.no_grad()
def test_a_fresh_vae_fitted_by_pca_reconstructs_as_pca_does():
    """Known answer: the networks' outputs start at zero, so encode then decode is PCA's projection
    of each patch, computed here independently with numpy. A patch cut along the wrong axis, a
    missing mean or a transposed basis changes the projection."""
    vae = CausalVAE(CFG).eval()
    fit = video(n=6, t=3, h=4, w=4, seed=1)
    kept = fit_pca(vae.encoder.linear, vae.decoder.linear, fit)
    assert 0 < kept["first"] < 1 and 0 < kept["rest"] < 1
    x = video(seed=2)
    out = vae.decode(vae.encode(x)[0])
    expected = numpy_pca_round_trip(fit.double().numpy(), x.double().numpy(), CFG.latent_channels,
                                    CFG.time_compression, CFG.space_compression)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4, rtol=1e-4)
    assert not np.allclose(expected, x.numpy(), atol=0.1)  # 4 of 48 and 192 dimensions: a real projection


@torch.no_grad()
def test_pca_latents_are_uncorrelated_and_ordered_by_variance():
    vae = CausalVAE(CFG).eval()
    fit = video(n=8, t=3, h=4, w=4, seed=3)
    fit_pca(vae.encoder.linear, vae.decoder.linear, fit)
    z = vae.encode(fit)[0][:, :, 1:].transpose(0, 1).flatten(1)  # [Cz, samples] of the later latent frames
    cov = torch.cov(z.double())
    var = cov.diagonal()
    assert torch.all(var[:-1] >= var[1:])  # largest component first
    assert (cov - torch.diag(var)).abs().max() < 1e-4 * var.max()
    assert z.mean(1).abs().max() < 1e-4  # the mean is taken away


@pytest.mark.parametrize("plan", [CodingPlan(latent_chunk=1), CodingPlan(latent_chunk=2), CodingPlan(tile=3),
                                  CodingPlan(latent_chunk=1, tile=2)])
@torch.no_grad()
def test_streamed_and_tiled_equal_whole_with_the_linear_path(plan):
    vae = randomize_(CausalVAE(CFG).eval(), std=0.2)
    x = video(t=4, h=7, w=6)
    z = torch.randn(2, CFG.latent_channels, 4, 7, 6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(vae.encode(x, plan)[0], vae.encode(x, CodingPlan())[0], atol=1e-5, rtol=1e-5)
    whole = vae.decode(z, CodingPlan())
    torch.testing.assert_close(vae.decode(z, plan), whole, atol=1e-5, rtol=1e-5)
    # and the path is in use: without it the output changes
    vae.decoder.linear.rest.bias.add_(1.0)
    assert (vae.decode(z, CodingPlan()) - whole)[:, :, 1:].abs().min() > 0.99


@torch.no_grad()
def test_causal_and_an_image_is_the_first_latent_frame():
    vae = randomize_(CausalVAE(CFG).eval(), std=0.2)
    x = video(t=3)
    mean = vae.encode(x)[0]
    torch.testing.assert_close(vae.encode(x[:, :, :1])[0], mean[:, :, :1], atol=1e-5, rtol=1e-5)
    later = x.clone()
    later[:, :, 5:] += 1.0  # frames of latent frame 2 only
    changed = (vae.encode(later)[0] - mean).abs().amax(dim=(0, 1, 3, 4))
    assert changed[:2].max() == 0 and changed[2] > 0
    z = torch.randn_like(mean)
    out = vae.decode(z)
    z2 = z.clone()
    z2[:, :, 2] += 1.0
    changed = (vae.decode(z2) - out).abs().amax(dim=(0, 1, 3, 4))
    assert changed[:5].max() == 0 and changed[5:].min() > 0


def test_the_vae_stage_starts_from_pca_of_its_world(tmp_path):
    """With linear_path on, a VAE stage of 0 steps gives the PCA coder of its own training clips:
    on new Shapes clips it reconstructs better than the same VAE with a random linear path."""
    from kinema.data.shapes import to_tensor
    from kinema.data.worlds import render_clip
    from kinema.runtime import cpu_runtime
    from kinema.train.trainer import Log
    from kinema.train.vae_stage import VAEStage, train_vae

    def error(linear_init_clips: int) -> float:
        log = Log(tmp_path / f"log{linear_init_clips}.txt")
        stage = VAEStage(steps=0, linear_init_clips=linear_init_clips, sample_every=0)
        vae = train_vae(CFG, stage, run_dir=tmp_path / str(linear_init_clips), seed=0, size=32,
                        runtime=cpu_runtime("fp32"), resume=False, log=log)
        x = torch.stack([to_tensor(render_clip("shapes", 10_000 + i, 17, 32)) for i in range(4)])
        with torch.no_grad():
            return float((vae.decode(vae.encode(x)[0]) - x).pow(2).mean())

    fitted, random = error(16), error(0)
    assert "linear path: PCA of 16 clips" in (tmp_path / "log16.txt").read_text()
    assert fitted < 0.5 * random
