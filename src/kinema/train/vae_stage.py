"""Stage 1: train the causal VAE on rendered Shapes clips (held-out colour/shape pairs excluded).

Stage 1b (optional, `vae_decoder` in a recipe): fine-tune the decoder alone with the encoder
frozen, on posterior means, as Stable Diffusion's ft-MSE decoder was. The latent space does not
move, so latent caches and any denoiser trained on them stay valid; only what latents decode to
changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kinema.config import VAEConfig, from_dict, to_dict
from kinema.data import shapes
from kinema.data.worlds import render_clip
from kinema.errors import KinemaError, at_least, require
from kinema.io.video import write_gif
from kinema.io.weights import load_json, load_weights
from kinema.runtime import Runtime, to_device
from kinema.train import dist
from kinema.train.checkpoint import latest_checkpoint
from kinema.train.trainer import Log, OptimConfig, fit, seeded
from kinema.vae.autoencoder import CausalVAE
from kinema.vae.discriminator import PatchDiscriminator3D, adaptive_weight, generator_loss, hinge_d
from kinema.vae.linear_path import fit_pca
from kinema.vae.losses import VAELossConfig, vae_loss


@dataclass
class VAEStage:
    steps: int = 2000
    batch_size: int = 8
    frames: int = 9  # training clip length (1 + 4k); the VAE is causal and convolutional in time
    # extra single frames (T=1 clips) per step: about 1/frames the cost of a clip each, so shape and
    # colour see many more objects per second; they also train the image path used for image-to-video
    image_batch_size: int = 0
    # progressive clip length, as video recipes do: ((from_step, frames, batch_size), ...) replaces
    # frames / batch_size from each from_step on. Short clips are cheap, but their latents never
    # reach the later time positions of a full-length clip, where an untrained decoder draws ghosts
    length_schedule: tuple[tuple[int, int, int], ...] = ()
    # start from this VAE (a shipped model name such as "shapes", a model directory, or a VAE run or
    # checkpoint) instead of random weights; with steps: 0 it is used as it is
    init_from: str | None = None
    # the clips trained on, if not the recipe's world: "photos", or a mix such as "shapes+photos"
    # (each clip from one world in turn); the decoder fine-tune follows it
    world: str | None = None
    # each photograph (or dead-leaves picture) in a random look: mirrored or not, colours reordered,
    # hue-turned and saturated (grey ones tinted); the decoder fine-tune follows it. On the photo VAE
    # it did not help held-out photographs (docs/vae.md: 18.77 against 18.93 dB); on leaves it took
    # held-out frame 0 past PCA (24.30 against 23.57 dB without it), whose greens were drawn blue
    photo_augment: bool = False
    # with model.vae.linear_path and no init_from: the linear path starts as PCA of this many
    # training clips of the VAE's longest length (kinema.vae.linear_path.fit_pca); 0 leaves it random
    linear_init_clips: int = 200
    # with model.vae.carry: the carry head's learning rate over optim.lr. A head added to a trained
    # VAE at that VAE's fine-tuning rate (1e-4) had not moved in 400 steps (gate and flow as they
    # started), so a new module learns faster than the weights it sits on
    carry_lr_scale: float = 10.0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4, warmup=100))
    loss: VAELossConfig = field(default_factory=lambda: VAELossConfig(foreground_weight=20.0))
    log_every: int = 25
    ckpt_every: int = 250
    keep_checkpoints: int = 2  # the newest kept on disk (more: a curve over training can be measured afterwards)
    sample_every: int = 500

    def __post_init__(self):
        check_stage(self)
        at_least(self, 0, "linear_init_clips")
        at_least(self, 1, "keep_checkpoints")
        require(self.carry_lr_scale > 0, "carry_lr_scale", self.carry_lr_scale, "must be above 0")


@dataclass
class DecoderStage:
    """Stage 1b, the decoder fine-tune (module docstring): VAEStage's knobs, less the length schedule."""

    steps: int = 0  # 0 skips the stage
    batch_size: int = 4
    frames: int = 17
    image_batch_size: int = 0
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup=50))
    loss: VAELossConfig = field(default_factory=lambda: VAELossConfig(kl=0.0, foreground_weight=20.0))
    log_every: int = 25
    ckpt_every: int = 100
    sample_every: int = 500
    keep_checkpoints: int = 2  # as VAEStage's

    def __post_init__(self):
        check_stage(self)
        at_least(self, 1, "keep_checkpoints")


def check_stage(stage) -> None:
    """The ranges of a VAE stage's numbers (VAEStage, DecoderStage)."""
    at_least(stage, 0, "steps", "image_batch_size", "sample_every")
    at_least(stage, 1, "batch_size", "frames", "log_every", "ckpt_every")
    for i, entry in enumerate(getattr(stage, "length_schedule", ())):
        require(len(entry) == 3 and min(entry) >= 0 and min(entry[1:]) >= 1, f"length_schedule[{i}]", list(entry),
                "give [from_step, frames, batch_size], frames and batch_size at least 1")


def clip_shape(stage: VAEStage, step: int) -> tuple[int, int]:
    """(frames, batch_size) of the clips trained on at `step`."""
    frames, batch_size = stage.frames, stage.batch_size
    for from_step, f, b in sorted(stage.length_schedule):
        if step >= from_step:
            frames, batch_size = f, b
    return frames, batch_size


def shapes_batch(seed: int, step: int, batch_size: int, frames: int, size: int, stream: int = 0,
                 world: str = "shapes", share: bool = True, augment: bool = False) -> torch.Tensor:
    """A batch of seen-combination clips of `world` that depends only on (seed, step, stream): [B, 3, T, H, W].
    Under torchrun, this process's share of it (kinema.train.dist), unless `share` is False."""
    rng = np.random.default_rng([seed, step] if stream == 0 else [seed, step, stream])
    seeds = rng.integers(0, 2**62, size=batch_size)
    seeds = seeds[dist.share(batch_size)] if share else seeds
    return torch.stack([shapes.to_tensor(render_clip(world, int(s), frames, size, augment)) for s in seeds])


def clips_and_images(reconstruct, clips: torch.Tensor, images: torch.Tensor | None):
    """reconstruct(clips), plus reconstruct(images) ([B, 3, 1, H, W]) with its terms logged as image_*."""
    loss, terms = reconstruct(clips)
    if images is not None:
        image_loss, image_terms = reconstruct(images)
        loss = loss + image_loss
        terms.update({f"image_{k}": v for k, v in image_terms.items()})
    return loss, terms


def load_vae(path: str | Path) -> CausalVAE:
    """A model directory (vae.safetensors + config.json), or a VAE checkpoint directory / run."""
    from kinema.pipelines.registry import resolve

    path = resolve(path)
    if (path / "vae.safetensors").is_file():
        root = path
        cfg = from_dict(VAEConfig, load_json(root / "config.json")["vae"])
        weights = root / "vae.safetensors"
    else:
        root = latest_checkpoint(path) or latest_checkpoint(path / "ckpt") or path
        if not (root / "model.safetensors").is_file():
            raise KinemaError(f"{path} is neither a model directory nor a VAE checkpoint")
        cfg = from_dict(VAEConfig, load_json(root / "config.json"))
        weights = root / "model.safetensors"
    vae = CausalVAE(cfg)
    vae.load_state_dict(load_weights(weights))
    return vae.eval()


def fit_linear_start(vae: CausalVAE, seed: int, clips: int, size: int, world: str, augment: bool = False):
    """Set `vae`'s linear path to PCA of `clips` clips of `world`, as the VAE stage does before its first
    step -> the share of variance kept (fit_pca). Stream 4: clips no training step draws; every process fits the
    same clips (share=False)."""
    batch = shapes_batch(seed, 0, clips, vae.cfg.longest_clip(), size, 4, world, share=False, augment=augment)
    return fit_pca(vae.encoder.linear, vae.decoder.linear, batch)


def train_vae(cfg: VAEConfig, stage: VAEStage, *, run_dir: Path, seed: int, size: int,
              runtime: Runtime, resume: bool, log: Log, world: str = "shapes", augment: bool = False) -> CausalVAE:
    torch.manual_seed(seed)
    device = runtime.device
    for b in (stage.batch_size, stage.image_batch_size, *(b for _, _, b in stage.length_schedule)):
        dist.check_batch(b, "vae.batch_size (and image_batch_size, length_schedule)", stage.optim.accumulate)
    vae = CausalVAE(cfg)
    if stage.init_from:
        start = load_vae(stage.init_from)
        unstated = dict(latent_mean=None, latent_std=None)  # statistics, not architecture
        if not start.cfg.carry:  # a carry head may be added to a VAE without one: it starts unmoved, gate 1/2
            unstated.update(carry=0, carry_motion="flow")
        if dataclasses.replace(start.cfg, **unstated) != dataclasses.replace(cfg, **unstated):
            raise KinemaError(f"vae.init_from {stage.init_from}: its VAE config differs from the recipe's model.vae; "
                              f"copy the model directory's config.json vae section into the recipe")
        missing, _ = vae.load_state_dict(start.state_dict(), strict=False)
        misfit = [k for k in missing if not k.startswith("carry.")]  # (configs equal: nothing unexpected)
        if misfit:
            raise KinemaError(f"vae.init_from {stage.init_from}: its weights do not fit ({misfit[0]}); re-export it")
        log(f"[vae] starts from {stage.init_from}" + (" (the carry head new)" if missing else ""))
    elif cfg.linear_path and stage.linear_init_clips:
        kept = fit_linear_start(vae, seed, stage.linear_init_clips, size, world, augment)
        log(f"[vae] linear path: PCA of {stage.linear_init_clips} clips keeps {kept['first']:.1%} of frame 0's patch variance, "
            f"{kept['rest']:.1%} of the later frames'")
    if vae.carry is not None:
        vae.carry.lr_scale = stage.carry_lr_scale  # (kinema.train.trainer.param_groups)
    vae = vae.to(device)
    disc = PatchDiscriminator3D(cfg.in_channels, stage.loss.disc_channels).to(device) if stage.loss.adversarial else None

    def reconstruction_loss(model, x: torch.Tensor, g: torch.Generator, step: int):
        """model: the VAE, or its data-parallel wrapper (called, not its methods)."""
        x = to_device(x, device)
        b, _, frames, h, w = x.shape
        s = cfg.space_compression
        # drawn on the CPU for the global batch, then this process's share: the same on every device and split
        whole = (b * dist.parts(), cfg.latent_channels, vae.latent_frames(frames), h // s, w // s)
        eps = to_device(torch.randn(whole, generator=g)[dist.share(whole[0])], device)
        recon, mean, logvar = model(x, eps)
        loss, terms = vae_loss(stage.loss, recon, x, mean, logvar)
        if disc is not None and step >= stage.loss.adversarial_start:
            g_loss = generator_loss(disc, recon)  # reaches the VAE only
            weight = adaptive_weight(loss, g_loss, vae.decoder.conv_out.conv.weight)
            d_loss = hinge_d(disc(x).float(), disc(recon.detach()).float())  # reaches the discriminator only
            loss = loss + stage.loss.adversarial * weight * g_loss + d_loss
            terms.update(adversarial=float(g_loss.detach()), adaptive_weight=float(weight), disc=float(d_loss.detach()))
        return loss, terms

    def loss_fn(model, step: int):
        g = seeded(seed, step, stream=1)
        frames, batch_size = clip_shape(stage, step)
        images = (shapes_batch(seed, step, stage.image_batch_size, 1, size, 1, world, augment=augment)
                  if stage.image_batch_size else None)
        return clips_and_images(lambda x: reconstruction_loss(model, x, g, step),
                                shapes_batch(seed, step, batch_size, frames, size, 0, world, augment=augment), images)

    fit(vae, loss_fn, steps=stage.steps, optim=stage.optim, run_dir=run_dir / "ckpt", config=to_dict(cfg),
        log=log, resume=resume, runtime=runtime, log_every=stage.log_every, ckpt_every=stage.ckpt_every,
        sample_fn=recon_samples(run_dir, seed, size, world), sample_every=stage.sample_every, desc="vae", aux=disc,
        keep=stage.keep_checkpoints)
    vae.eval()
    return vae


def tune_decoder(vae: CausalVAE, stage: DecoderStage, *, run_dir: Path, seed: int, size: int,
                 runtime: Runtime, resume: bool, log: Log, world: str = "shapes", augment: bool = False) -> CausalVAE:
    """Train `vae.decoder` to decode the frozen encoder's posterior means; the encoder is untouched."""
    if stage.loss.adversarial:
        raise KinemaError("vae_decoder.loss.adversarial: the decoder fine-tune has no discriminator yet; "
                          "use it in the vae stage")
    vae.to(runtime.device).encoder.requires_grad_(False)  # AdamW skips parameters that never receive a gradient

    def reconstruct(model, x: torch.Tensor):
        x = to_device(x, runtime.device)
        recon, mean, logvar = model(x)  # the encoder is frozen: no graph through it
        return vae_loss(stage.loss, recon, x, mean, logvar)

    def loss_fn(model, step: int):
        # streams 2 and 3: clips the VAE stage never drew
        images = (shapes_batch(seed, step, stage.image_batch_size, 1, size, 3, world, augment=augment)
                  if stage.image_batch_size else None)
        return clips_and_images(lambda x: reconstruct(model, x),
                                shapes_batch(seed, step, stage.batch_size, stage.frames, size, 2, world, augment=augment),
                                images)

    fit(vae, loss_fn, steps=stage.steps, optim=stage.optim, run_dir=run_dir / "ckpt", config=to_dict(vae.cfg),
        log=log, resume=resume, runtime=runtime, log_every=stage.log_every, ckpt_every=stage.ckpt_every,
        sample_fn=recon_samples(run_dir, seed, size, world), sample_every=stage.sample_every, desc="vae_decoder",
        keep=stage.keep_checkpoints)
    vae.encoder.requires_grad_(True)
    vae.eval()
    return vae


def recon_samples(run_dir: Path, seed: int, size: int, world: str = "shapes"):
    """A sample_fn writing a fixed batch of full-length clips (top) over their reconstructions: the
    VAE's longest clip up to 17 frames (13 at 6x)."""
    def sample_fn(model: CausalVAE, _ema, step: int):
        model.eval()
        x = shapes_batch(seed + 1, 0, 4, model.cfg.longest_clip(), size, 0, world, share=False)
        with torch.no_grad():
            recon = model.decode(model.encode(x.to(next(model.parameters()).device))[0])
        top = np.concatenate([shapes.to_uint8(v) for v in x], axis=2)
        bottom = np.concatenate([shapes.to_uint8(v) for v in recon], axis=2)
        write_gif(np.concatenate([top, bottom], axis=1), run_dir / "samples" / f"recon_{step:07d}.gif", scale=2)
    return sample_fn
