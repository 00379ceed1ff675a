import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kinema.config import VAE_PRESETS, VAEConfig
from kinema.errors import KinemaError
from kinema.vae.autoencoder import CausalVAE
from kinema.vae.causal_conv import CausalConv3d
from kinema.vae.losses import VAELossConfig, kl_divergence, vae_loss

torch.manual_seed(0)


def tiny_vae() -> CausalVAE:
    torch.manual_seed(0)
    return CausalVAE(VAE_PRESETS["tiny"]).eval()


def test_causal_conv_output_frame_ignores_future_frames():
    conv = CausalConv3d(3, 4, kernel_size=3)
    x = torch.randn(1, 3, 7, 8, 8)
    y = conv(x)
    x2 = x.clone()
    x2[:, :, 4:] = torch.randn_like(x2[:, :, 4:])  # change frames 4..6
    y2 = conv(x2)
    assert y.shape == (1, 4, 7, 8, 8)
    torch.testing.assert_close(y[:, :, :4], y2[:, :, :4])
    assert not torch.allclose(y[:, :, 4:], y2[:, :, 4:])


def test_causal_conv_single_frame_uses_only_last_kernel_slice():
    conv = CausalConv3d(3, 4, kernel_size=3)
    x = torch.randn(2, 3, 1, 8, 8)
    w, b = conv.conv.weight, conv.conv.bias
    expected = F.conv2d(x[:, :, 0], w[:, :, -1], b, padding=1)
    torch.testing.assert_close(conv(x)[:, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_causal_conv_strided_time_layout():
    conv = CausalConv3d(2, 2, kernel_size=3, stride=(2, 1, 1))
    assert conv(torch.randn(1, 2, 9, 4, 4)).shape[2] == 5  # 1 + 2k -> 1 + k
    assert conv(torch.randn(1, 2, 1, 4, 4)).shape[2] == 1


@torch.no_grad()
def test_encoder_is_causal_per_latent_window():
    vae = tiny_vae()
    x = torch.randn(1, 3, 9, 16, 16)
    mean, _ = vae.encode(x)
    assert mean.shape[2] == 3  # 1 + 4k -> 1 + k
    # latent frame k covers input frames up to 4k; change everything after frame 4 (latent 1's window)
    x2 = x.clone()
    x2[:, :, 5:] = torch.randn_like(x2[:, :, 5:])
    mean2, _ = vae.encode(x2)
    torch.testing.assert_close(mean[:, :, :2], mean2[:, :, :2])
    assert not torch.allclose(mean[:, :, 2], mean2[:, :, 2])


@torch.no_grad()
def test_decoder_is_causal():
    vae = tiny_vae()
    z = torch.randn(1, 4, 3, 4, 4)
    y = vae.decode(z)
    assert y.shape == (1, 3, 9, 16, 16)
    z2 = z.clone()
    z2[:, :, 2] = torch.randn_like(z2[:, :, 2])
    y2 = vae.decode(z2)
    torch.testing.assert_close(y[:, :, :5], y2[:, :, :5])  # frames from latents 0 and 1


@torch.no_grad()
def test_image_latent_equals_first_latent_frame_of_video():
    vae = tiny_vae()
    video = torch.randn(2, 3, 9, 16, 16)
    image_mean, _ = vae.encode(video[:, :, :1])
    video_mean, _ = vae.encode(video)
    assert image_mean.shape[2] == 1
    torch.testing.assert_close(image_mean[:, :, 0], video_mean[:, :, 0], rtol=1e-5, atol=1e-5)


def test_frame_count_must_be_one_plus_4k():
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        tiny_vae().encode(torch.randn(1, 3, 8, 16, 16))


@torch.no_grad()
def test_4x8x8_16_channel_configuration():
    cfg = VAE_PRESETS["4x8x8"]
    assert (cfg.time_compression, cfg.space_compression, cfg.latent_channels) == (4, 8, 16)
    vae = CausalVAE(VAE_PRESETS["4x8x8-tiny"])
    mean, logvar = vae.encode(torch.randn(1, 3, 17, 32, 32))
    assert mean.shape == logvar.shape == (1, 16, 5, 4, 4)
    assert vae.decode(mean).shape == (1, 3, 17, 32, 32)


def test_latent_normalisation_round_trip():
    cfg = VAEConfig(**{**VAE_PRESETS["tiny"].__dict__, "latent_mean": (0.1, -0.2, 0.3, 0.0), "latent_std": (2.0, 0.5, 1.0, 3.0)})
    vae = CausalVAE(cfg)
    z = torch.randn(2, 4, 3, 4, 4)
    torch.testing.assert_close(vae.denormalize(vae.normalize(z)), z)
    assert not torch.allclose(vae.normalize(z), z)


def test_latent_statistics_of_means_and_of_posterior_samples():
    """Known values: means (1, 3) and (0, 0) have mean (2, 0) and std (sqrt 2, 0); sampling with
    posterior variance e^lv adds its average to the variance. And samples normalised with the
    sampled statistics have unit std, where the means' std would leave them wider."""
    from kinema.vae.autoencoder import latent_statistics

    means = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    logvars = torch.tensor([[0.0, 0.0], [math.log(4.0), math.log(4.0)]])
    mean, std = latent_statistics(means, logvars, sampled=False)
    torch.testing.assert_close(mean, torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(std, torch.tensor([math.sqrt(2.0), 0.0]))
    torch.testing.assert_close(latent_statistics(means, logvars, sampled=True)[1], torch.tensor([math.sqrt(3.0), 2.0]))

    g = torch.Generator().manual_seed(0)
    means, logvars = torch.randn(3, 20000, generator=g), torch.full((3, 20000), math.log(0.5))
    samples = means + (0.5 * logvars).exp() * torch.randn(means.shape, generator=g)
    mean, std = latent_statistics(means, logvars, sampled=True)
    torch.testing.assert_close(((samples - mean[:, None]) / std[:, None]).std(1), torch.ones(3), atol=0.02, rtol=0)


def test_kl_is_zero_for_standard_normal_posterior():
    assert kl_divergence(torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)).item() == 0.0
    assert kl_divergence(torch.ones(2, 4, 3), torch.zeros(2, 4, 3)).item() > 0


def test_foreground_weight_raises_the_loss_on_objects():
    target = -torch.ones(1, 3, 1, 8, 8)
    target[:, :, :, 2:4, 2:4] = 1.0  # a bright object
    black = -torch.ones_like(target)  # a reconstruction that forgot the object
    z = torch.zeros(1, 1, 1, 1, 1)
    plain, _ = vae_loss(VAELossConfig(foreground_weight=0.0, kl=0.0), black, target, z, z)
    weighted, _ = vae_loss(VAELossConfig(foreground_weight=20.0, kl=0.0), black, target, z, z)
    assert weighted.item() == pytest.approx(21 * plain.item())


def test_foreground_from_either_weights_ghosts_like_missing_objects():
    target = -torch.ones(1, 3, 1, 8, 8)
    target[:, :, :, 2:4, 2:4] = 1.0
    missing = -torch.ones_like(target)  # the object is gone
    ghost = target.clone()
    ghost[:, :, :, 5:7, 5:7] = 1.0  # the object, plus a ghost of the same size elsewhere
    z = torch.zeros(1, 1, 1, 1, 1)

    def loss(recon, source):
        cfg = VAELossConfig(foreground_weight=20.0, kl=0.0, foreground_from=source)
        return vae_loss(cfg, recon, target, z, z)[0].item()

    assert loss(ghost, "target") == pytest.approx(loss(missing, "target") / 21)  # a ghost is cheap
    assert loss(ghost, "either") == pytest.approx(loss(missing, "either"))  # now it costs the same


def test_foreground_from_rejects_unknown_values():
    with pytest.raises(KinemaError, match="foreground_from"):
        VAELossConfig(foreground_from="recon")


def test_gradient_loss_sees_blurred_edges_but_not_flat_offsets():
    target = -torch.ones(1, 3, 1, 16, 16)
    target[:, :, :, 4:12, 4:12] = 1.0  # a square with sharp corners
    blurred = torch.nn.functional.avg_pool3d(target, (1, 3, 3), stride=1, padding=(0, 1, 1),
                                             count_include_pad=False)
    shifted = target + 0.1  # every pixel off by the same amount: no edge is wrong
    z = torch.zeros(1, 1, 1, 1, 1)
    cfg = VAELossConfig(l1=0.0, kl=0.0, gradient=1.0)

    def loss(recon):
        return vae_loss(cfg, recon, target, z, z)[1].get("gradient", 0.0)

    assert loss(target) == 0.0 and loss(shifted) == pytest.approx(0.0, abs=1e-7)
    assert loss(blurred) > 0.05


def test_naive_baseline_keeps_the_latents_count_and_smooth_clips():
    """As many numbers as the latent (4x8x8x16 at 17x64x64: 3 x 5 x 18 x 18 = 4860 against 5120),
    and a clip that trilinear sampling represents (constant in space and time) comes back exactly."""
    from kinema.eval.recon import baseline_size, naive_baseline

    cfg = VAE_PRESETS["4x8x8"]
    assert baseline_size(cfg, 17, 64, 64) == (5, 18, 18)
    assert baseline_size(VAE_PRESETS["tiny"], 9, 32, 32) == (3, 9, 9)  # 4x4x4x4: 3 x 3 x 9 x 9 = 729 against 768
    x = torch.tensor([0.5, -0.2, 0.9]).view(1, 3, 1, 1, 1).expand(2, 3, 17, 64, 64)
    torch.testing.assert_close(naive_baseline(x, cfg), x)
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 1, 1, 64).expand(1, 3, 17, 64, 64)
    err = (naive_baseline(ramp, cfg) - ramp).abs()
    assert err[..., 8:-8].max() < 1e-5 and err.max() < 0.1  # linear in space: exact away from the edges


def test_detail_ratio_known_answers():
    """The sharpness figure of kinema eval vae: 1 for the reference itself; exactly 1/4 for the
    reference at half contrast around grey (steps halve, energy quarters: a missing square gives
    1/2); 0 for a flat frame; a 3x3 box blur of white noise keeps 1/27 of its steps' energy (a step
    of the blur is the difference of two 3-pixel columns over 9: variance 6/81 against 2), and a
    smooth reference with noise added has more than 1."""
    from scipy.ndimage import uniform_filter

    from kinema.eval.recon import detail_ratio

    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 255, (2, 32, 32, 3))
    assert detail_ratio(ref, ref) == pytest.approx(1.0)
    assert detail_ratio(ref, 127.5 + 0.5 * (ref - 127.5)) == pytest.approx(0.25)
    assert detail_ratio(ref, np.full_like(ref, 90.0)) == 0.0
    blurred = uniform_filter(ref, size=(1, 3, 3, 1), mode="reflect")
    assert detail_ratio(ref, blurred) == pytest.approx(1 / 27, rel=0.1)
    smooth = uniform_filter(ref, size=(1, 9, 9, 1), mode="reflect")
    assert detail_ratio(smooth, smooth + rng.normal(0, 5, smooth.shape)) > 1.5


def test_ssim_matches_scikit_image():
    """Single-scale SSIM with a Gaussian window against skimage's, number for number."""
    from skimage.metrics import structural_similarity

    from kinema.vae.perceptual import ssim_parts

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 36, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ours = ssim_parts(x, y)[0].item()
    ref = structural_similarity(x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
                                channel_axis=-1, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert abs(ours - ref) < 1e-5 and 0.1 < ours < 0.9


def test_ms_ssim_matches_pytorch_msssim():
    """Five-scale MS-SSIM against pytorch-msssim's, number for number. It averages each channel's
    MS-SSIM, kinema the channels at each scale, so one channel at a time is the same figure."""
    pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="the MS-SSIM reference (the dev extra installs it)")
    from kinema.vae.perceptual import ms_ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 176, 176, generator=g)  # 176 px: all five scales (11 px at the coarsest)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ref = pytorch_msssim.ms_ssim(x, y, data_range=1.0, size_average=False)  # [2]
    ours = torch.stack([ms_ssim(x[:, c:c + 1, None], y[:, c:c + 1, None], data_range=1.0) for c in range(3)]).mean(0)
    assert torch.allclose(ours, ref, atol=1e-5) and (0.3 < ours).all() and (ours < 0.95).all()
    one = torch.rand(1, 1, 1, 64, 64, generator=g)  # 64 px: three scales
    assert ms_ssim(one, one.flip(-1), data_range=1.0) < ms_ssim(one, (one + 0.05).clamp(0, 1), data_range=1.0)


def test_ms_ssim_term_is_zero_for_a_perfect_recon_and_has_gradients():
    from kinema.vae.perceptual import ms_ssim

    x = torch.rand(2, 3, 2, 64, 64) * 2 - 1
    assert torch.allclose(ms_ssim(x, x), torch.ones(4), atol=1e-5)  # one value per frame
    recon = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    loss_cfg = VAELossConfig(l1=0.0, kl=0.0, perceptual=1.0)
    mean = torch.zeros(2, 4, 1, 8, 8)
    total, terms = vae_loss(loss_cfg, recon, x, mean, mean)
    total.backward()
    assert terms["perceptual"] > 0.05 and recon.grad.abs().sum() > 0
    with pytest.raises(KinemaError, match="perceptual_net 'vgg'"):
        VAELossConfig(perceptual_net="vgg")


def test_ms_ssim_is_fp32_under_bf16_autocast():
    """Training under bf16 autocast must get the fp32 MS-SSIM and its gradient, not a bf16 variance
    (E[x^2] - E[x]^2) that loses its digits: the first steps of a bf16 run with the term went NaN."""
    from kinema.vae.perceptual import ms_ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 1, 64, 64, generator=g) * 2 - 1
    recon = (x + 0.1 * torch.randn(x.shape, generator=g)).requires_grad_(True)
    ref = ms_ssim(recon, x)
    (grad,) = torch.autograd.grad(ref.sum(), recon)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf = ms_ssim(recon, x)
        (bf_grad,) = torch.autograd.grad(bf.sum(), recon)
    assert bf.dtype == torch.float32
    torch.testing.assert_close(bf, ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(bf_grad, grad, atol=1e-7, rtol=1e-5)


def test_hinge_generator_and_adaptive_weight_known_values():
    from kinema.vae.discriminator import PatchDiscriminator3D, adaptive_weight, generator_loss, hinge_d

    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = (0, 0.5, 2) -> 2.5 / 3; relu(1 + fake) = (0, 1, 2) -> 1
    assert torch.isclose(hinge_d(real, fake), torch.tensor(2.5 / 3 + 1.0))
    d = PatchDiscriminator3D(channels=4, layers=2)
    recon = torch.randn(1, 3, 5, 16, 16, requires_grad=True)
    g = generator_loss(d, recon)
    g.backward()
    assert recon.grad.abs().sum() > 0 and all(p.grad is None for p in d.parameters())  # D untouched by its adversary
    assert all(p.requires_grad for p in d.parameters())
    assert d(torch.randn(2, 3, 1, 16, 16)).shape[2] == 1  # an image is a one-frame clip
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    a = torch.tensor([3.0, 4.0])
    assert torch.isclose(adaptive_weight((w * a).sum(), 2 * (w * a).sum(), w), torch.tensor(0.5), atol=1e-4)


def test_foreground_per_clip_weighs_every_clip_alike():
    """A dark clip with a bright quarter and an all-bright clip: per clip, the weights average 1;
    the object still weighs 21x its background: 21 / 6 against 1 / 6 (6 = 1 + 20 x 1/4)."""
    from kinema.vae.losses import pixel_weights

    target = -torch.ones(2, 3, 1, 4, 4)
    target[0, :, :, :2, :2] = 1.0  # a quarter of clip 0 is bright
    target[1] = 1.0  # clip 1 is bright everywhere
    w = pixel_weights(target, 20.0, per_clip=True)
    assert torch.allclose(w.mean(dim=(1, 2, 3, 4)), torch.ones(2))
    assert w[0, 0, 0, 0, 0].item() == pytest.approx(21 / 6) and w[0, 0, 0, 3, 3].item() == pytest.approx(1 / 6)
    assert torch.allclose(w[1], torch.ones_like(w[1]))
    assert pixel_weights(target, 20.0)[1].mean().item() == pytest.approx(21.0)  # without it: 21x clip 0's background
