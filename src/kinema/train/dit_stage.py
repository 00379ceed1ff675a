"""Stage 2: cache VAE latents and text states once, then train the MM-DiT with rectified flow.

Cache (run_dir/cache.safetensors): for `num_clips` rendered clips of seen combinations, the VAE
posterior (mean, logvar) and the combination index; for every seen combination
`captions_per_combo` phrasings (canonical first) encoded by the frozen text encoder; the empty
caption used for classifier-free guidance.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from kinema.config import ModelConfig, from_dict, to_dict
from kinema.data import camera, photos, scenes, shapes
from kinema.data.captions import caption_variants
from kinema.dit.patchify import patch_grid
from kinema.dit.transformer import Conditioning, MMDiT
from kinema.errors import KinemaError, at_least, fractions, require
from kinema.flow.frames import KnownFrames, generated_mse
from kinema.flow.paths import interpolate, velocity
from kinema.flow.timesteps import TimestepConfig, sample_timesteps
from kinema.io.video import write_gif
from kinema.io.weights import save_weights
from kinema.runtime import Runtime, to_device
from kinema.text.encoders import TextStates, check_widths, load_text_encoder
from kinema.train import dist
from kinema.train.trainer import Log, OptimConfig, fit, seeded
from kinema.vae.autoencoder import CausalVAE, latent_statistics


@dataclass
class DiTStage:
    steps: int = 6000
    batch_size: int = 64
    num_clips: int = 8000  # training clips rendered, encoded once and cached
    captions_per_combo: int = 32  # phrasings cached per (colour, shape, direction), or per clip at level 2; canonical first
    canonical_prob: float = 0.25  # share of samples captioned with the canonical phrasing
    # train on posterior samples (mean + std * eps) or on posterior means; means are the right
    # choice when the VAE's posterior noise is comparable to the spread of its means
    sample_posterior: bool = True
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup=200))
    ema_decay: float = 0.999
    caption_dropout: float = 0.1  # share of captions replaced by "" (enables classifier-free guidance)
    timesteps: TimestepConfig = field(default_factory=TimestepConfig)
    log_every: int = 25
    ckpt_every: int = 250
    sample_every: int = 1000
    sample_prompts: tuple[str, ...] = ("a red circle moving right", "a blue square moving up-left",
                                       "a yellow triangle moving down", "a cyan square standing still")
    # a cache made by `kinema prepare` from your own videos (kinema.data.latent_cache): the
    # denoiser trains on it instead of the recipe's world; num_clips and captions_per_combo are unused
    data: str | None = None
    # a curriculum over the cache's buckets (SPEC §5): ((from_step, max latent frames[, max side in
    # pixels]), ...), e.g. ((0, 1, 64), (2000, 3, 64), (4000, 99)): images alone, then short clips,
    # both at up to 64 pixels on the longer side, then everything
    curriculum: tuple[tuple[int, ...], ...] = ()
    # packing (kinema.dit.packing; `data` only): 0 draws each batch from one bucket of shape; N
    # draws batch_size clips of any shapes and packs them into rows of at most N video tokens
    pack_tokens: int = 0
    # given frames (image-to-video, start and end frames; kinema.flow.frames): the share of training
    # clips whose first / last latent frame is given, clean at time 0 and left out of the loss
    first_frame: float = 0.0
    last_frame: float = 0.0
    # diffusion forcing (kinema.pipelines.long, `--long forcing`): the share of training clips whose
    # latent frames each draw their own time (the rest share one); with dit.attention [causal] the
    # model learns to denoise frames after cleaner ones, and rolls a video forward at sampling
    frame_noise: float = 0.0
    # a clip with given first frames has the first 1 to `context_frames` latent frames given (drawn
    # uniformly): the context of a long video's next chunk (`kinema generate --long ar --context k`)
    context_frames: int = 1
    # an exported model directory whose denoiser weights this stage starts from (e.g. a text-to-video
    # model for an image-to-video one); its dit config must equal the recipe's but for frame_cond
    init_from: str | None = None
    # train some of the denoiser, freeze the rest: "motion" (AnimateDiff: the motion modules alone,
    # model.dit.motion_modules, on a frozen text-to-image model from init_from)
    train_only: str | None = None
    # frame strides to train at (model.dit.frame_stride): each clip is drawn at one of them, from
    # the bouncing Shapes world (objects reflect off the walls, so a clip of 1 + 16 s real frames
    # stays in view), every s-th frame kept (stride 1: see stride_one_world); (1,) is the plain
    # world at its own rate
    strides: tuple[int, ...] = (1,)
    # where a strided recipe draws its stride-1 clips: "bouncing" (the same world as the other
    # strides, where an object may turn within one clip) or "plain" (the plain world, straight
    # lines, which the text-to-video and image-to-video models trained on). A recipe with strides
    # (1,) draws the plain world whatever this says.
    stride_one_world: str = "bouncing"

    def __post_init__(self):
        at_least(self, 1, "steps", "batch_size", "num_clips", "captions_per_combo", "log_every", "ckpt_every")
        at_least(self, 0, "sample_every", "pack_tokens")
        at_least(self, 1, "context_frames")
        require(len(self.strides) > 0 and min(self.strides) >= 1, "strides", list(self.strides),
                "give whole numbers of at least 1, e.g. [1, 2, 4]")
        fractions(self, "canonical_prob", "caption_dropout", "first_frame", "last_frame", "frame_noise")
        require(not (self.pack_tokens and self.frame_noise), "pack_tokens", self.pack_tokens,
                "per-frame noise (frame_noise) is not packed yet; set pack_tokens to 0")
        require(not (self.pack_tokens and (self.first_frame or self.last_frame)), "pack_tokens", self.pack_tokens,
                "given frames (first_frame, last_frame) are not packed yet; set pack_tokens to 0")
        require(self.stride_one_world in ("bouncing", "plain"), "stride_one_world", self.stride_one_world,
                "use bouncing or plain")
        require(self.train_only in (None, "motion"), "train_only", self.train_only, "use motion, or leave it unset")
        fractions(self, "ema_decay", below_one=True)
        for entry in self.curriculum:
            require(len(entry) in (2, 3), "curriculum entry", list(entry),
                    "give [from_step, max latent frames] or [from_step, max latent frames, max side in pixels]")


def training_clips(world: str, stage: DiTStage, mc: ModelConfig, seed: int):
    """The stage's clips and their captions: (render(i) -> uint8 clip i, the caption key of each
    clip [num_clips], the phrasings of each key, canonical first, the camera features of each clip
    [num_clips, frames, 4] or None, and each clip's frame stride [num_clips] or None). Level 1's
    keys are its seen (colour, shape, direction) combinations; at level 2 and in the photo world
    every clip is its own key. Only the photo world has a camera (kinema.data.camera); only level
    1 trains at several strides (DiTStage.strides)."""
    rng = np.random.default_rng([seed, 7])
    rand = random.Random(seed)
    n, k = stage.num_clips, stage.captions_per_combo
    if world != "shapes" and tuple(stage.strides) != (1,):
        raise KinemaError(f"dit.strides {list(stage.strides)}: several frame strides train on world shapes only")
    if world == "photos":
        paths = [photos.photo_path(int(s), mc.frames) for s in rng.integers(0, 2**62, size=n)]

        def render_photo(i: int) -> np.ndarray:
            return photos.render(paths[i], mc.height)

        features = np.stack([camera.path_features(p, mc.height) for p in paths])  # [N, frames, 4]
        return render_photo, torch.arange(n), [photos.path_variants(p, k) for p in paths], features, None
    if world == "shapes":
        seen = shapes.combos(held_out=False)
        combo_idx = rng.integers(len(seen), size=n)
        clip_seeds = rng.integers(0, 2**62, size=n)
        strided = tuple(stage.strides) != (1,)  # (else nothing more is drawn: older recipes train as they did)
        clip_strides = np.asarray(stage.strides)[rng.integers(len(stage.strides), size=n)] if strided else None

        def render(i: int) -> np.ndarray:
            s = int(clip_strides[i]) if strided else 1
            if s > 1 or (strided and stage.stride_one_world == "bouncing"):
                return shapes.sample_bouncing_clip(int(clip_seeds[i]), seen[int(combo_idx[i])], frames=1 + (mc.frames - 1) * s,
                                                   size=mc.height)[0][::s]
            return shapes.sample_clip(int(clip_seeds[i]), seen[int(combo_idx[i])], frames=mc.frames, size=mc.height)[0]

        captions = []
        for combo in seen:
            variants = caption_variants(*combo)
            captions.append([variants[0]] + rand.sample(variants[1:], min(k - 1, len(variants) - 1)))
        return render, torch.tensor(combo_idx), captions, None, clip_strides
    clip_seeds = rng.integers(0, 2**62, size=n)
    scene_list = [scenes.sample_scene(int(s), frames=mc.frames, size=mc.height)[0] for s in clip_seeds]

    def render(i: int) -> np.ndarray:  # the same draw as sample_scene's: the scene comes out again
        return scenes.sample_scene_clip(int(clip_seeds[i]), frames=mc.frames, size=mc.height)[0]

    captions = [[scenes.scene_caption(sc)] + scenes.scene_variants(sc, rand, k - 1) for sc in scene_list]
    return render, torch.arange(n), captions, None, None


@torch.no_grad()
def build_cache(path: Path, mc: ModelConfig, stage: DiTStage, vae: CausalVAE, text_encoder, seed: int,
                log: Log, runtime: Runtime, encode_batch: int = 32, world: str = "shapes") -> dict[str, torch.Tensor]:
    """Encode once, on runtime.device in its precision; the cache is stored (and returned) on the CPU."""
    if path.is_file():
        return load_file(str(path))
    render, combo_idx, captions, cameras, strides = training_clips(world, stage, mc, seed)
    if mc.dit.camera_render and cameras is None:
        raise KinemaError(f"dit.camera_render: the {world} world has no camera; train camera control on world: photos")
    means, logvars, renders = [], [], []
    vae.eval()

    def encode(videos: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        with runtime.autocast():
            return vae.encode(to_device(torch.stack([shapes.to_tensor(v) for v in videos]), runtime.device))

    for start in tqdm(range(0, stage.num_clips, encode_batch), desc="cache latents", mininterval=2.0):
        clips = [render(i) for i in range(start, min(start + encode_batch, stage.num_clips))]
        m, lv = encode(clips)
        if mc.dit.camera_render:  # each clip's first frame as its camera sees it (kinema.data.camera.warp)
            renders.append(encode([camera.warp(c[0], cameras[i]) for i, c in enumerate(clips, start)])[0].float().half().cpu())
        means.append(m.float().half().cpu())
        logvars.append(lv.float().half().cpu())
    mean = torch.cat(means)
    texts = [t for phrasings in captions for t in phrasings]
    caption_combo = [key for key, phrasings in enumerate(captions) for _ in phrasings]
    states = [text_encoder(texts[i:i + 256]).to("cpu") for i in tqdm(range(0, len(texts), 256), desc="cache text")]
    empty = text_encoder([""]).to("cpu")
    cache = {
        "latent_mean": mean, "latent_logvar": torch.cat(logvars), "combo": combo_idx,
        "text_tokens": torch.cat([s.tokens for s in states]).float(),  # fp32, as inference encodes them
        "text_mask": torch.cat([s.mask for s in states]),
        "text_pooled": torch.cat([s.pooled for s in states]),
        "caption_combo": torch.tensor(caption_combo),
        "empty_tokens": empty.tokens.float(), "empty_mask": empty.mask, "empty_pooled": empty.pooled,
    }
    if cameras is not None:
        cache["camera"] = torch.from_numpy(camera.latent_features(cameras, vae.cfg.time_compression))
    if renders:
        cache["render_mean"] = torch.cat(renders)
    if strides is not None:
        cache["stride"] = torch.from_numpy(strides.astype(np.float32))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(path.with_suffix(".tmp"), cache)  # (permissions follow the umask, as for models)
    path.with_suffix(".tmp").replace(path)
    log(f"[cache] {world}: {stage.num_clips} clips, latents {tuple(mean.shape[1:])}, {len(texts)} captions -> {path}")
    return cache


class CaptionSampler:
    """Picks a caption per clip: canonical with probability p, else any cached phrasing; or dropped.
    The choice is drawn on the CPU from `g`; the cached states live on `device`."""

    def __init__(self, cache: dict[str, torch.Tensor], canonical_prob: float, dropout: float,
                 device: torch.device = torch.device("cpu")):
        combo = cache["caption_combo"]  # the key of each caption row, grouped by key, canonical first
        n_combos = int(combo.max()) + 1
        rows = torch.arange(len(combo))
        self.first = torch.full((n_combos,), len(combo)).scatter_reduce(0, combo, rows, "amin")  # canonical rows
        self.count = torch.bincount(combo, minlength=n_combos)
        self.text = TextStates(cache["text_tokens"], cache["text_mask"], cache["text_pooled"]).to(device)
        self.empty = TextStates(cache["empty_tokens"], cache["empty_mask"], cache["empty_pooled"]).to(device)
        self.canonical_prob, self.dropout, self.device = canonical_prob, dropout, device

    def __call__(self, combos: torch.Tensor, g: torch.Generator) -> TextStates:
        b = combos.shape[0]
        offset = (torch.rand(b, generator=g) * self.count[combos]).long()
        canonical = torch.rand(b, generator=g) < self.canonical_prob
        rows = self.first[combos] + torch.where(canonical, 0, offset)
        return drop_captions(self.text.index(rows.to(self.device)), self.empty, self.dropout, g)


def drop_captions(s: TextStates, empty: TextStates, p: float, g: torch.Generator) -> TextStates:
    """Replace each sample's caption by the empty one with probability p (drawn on the CPU from g),
    so the model also learns the unconditional velocity that classifier-free guidance needs."""
    drop = (torch.rand(s.mask.shape[0], generator=g) < p)[:, None].to(s.mask.device)
    empty = empty.to(s.mask.device)
    tokens = torch.where(drop[..., None], empty.tokens.expand_as(s.tokens), s.tokens).float()
    mask = torch.where(drop, empty.mask.expand_as(s.mask), s.mask)
    pooled = torch.where(drop, empty.pooled.expand_as(s.pooled), s.pooled)
    return TextStates(tokens, mask, pooled)


def flow_loss(model: MMDiT, z0: torch.Tensor, cond: Conditioning, tcfg: TimestepConfig, g: torch.Generator,
              frame_noise: float = 0.0):
    """Rectified-flow regression: ||v(x_t, t) - (x1 - x0)||^2 with t ~ tcfg. z0 and cond are the
    global batch; t and the noise are drawn for all of it, then each process (torchrun) takes its
    share, so any number of processes sees the same samples (kinema.train.dist). `frame_noise`:
    the share of clips whose latent frames each draw their own t ~ tcfg (diffusion forcing); at 0
    nothing more is drawn, so recipes without it train as before."""
    t = sample_timesteps(tcfg, z0.shape[0], generator=g)  # drawn on the CPU: the same on every device
    if frame_noise:
        b, f = z0.shape[0], z0.shape[2]
        own = torch.rand(b, generator=g) < frame_noise
        t = torch.where(own[:, None], sample_timesteps(tcfg, b * f, generator=g).view(b, f), t[:, None])  # [B, t]
    t = t.to(z0.device)
    x1 = torch.randn(z0.shape, generator=g).to(z0.device)
    s = dist.share(z0.shape[0])
    z0, x1, t, cond = z0[s], x1[s], t[s], cond.index(s)
    x_t, frames = interpolate(z0, x1, t), cond.held
    if frames is not None:  # given frames: clean, at time 0, out of the loss
        x_t, t = frames.clamp(x_t), frames.times(t)
    return generated_mse(model(x_t, t, cond), velocity(z0, x1), frames)


def given_frames(z0: torch.Tensor, stage: DiTStage, g: torch.Generator, clamped: bool = True) -> KnownFrames | None:
    """Which clips of the batch z0 [B, C, t, h, w] have their first / last latent frame given
    (stage.first_frame, stage.last_frame), drawn from g; with given first frames, the first 1 to
    stage.context_frames of them (at most all but one). None (and nothing drawn) when neither is set."""
    if not (stage.first_frame or stage.last_frame):
        return None
    b, frames = z0.shape[0], z0.shape[2]
    first = torch.rand(b, generator=g) < stage.first_frame
    last = (torch.rand(b, generator=g) < stage.last_frame) & (frames > 1)
    known = torch.zeros(b, frames, dtype=torch.bool)
    if stage.context_frames > 1:
        lead = torch.randint(1, min(stage.context_frames, max(frames - 1, 1)) + 1, (b,), generator=g)  # [B]
        known[:] = (torch.arange(frames)[None] < lead[:, None]) & first[:, None]
    else:  # (one draw fewer: recipes from before context_frames train as they did)
        known[:, 0] = first
    known[:, -1] |= last
    return KnownFrames(z0, known.to(z0.device), clamped=clamped)


def packed_flow_loss(model: MMDiT, z0: list[torch.Tensor], cond: Conditioning, tcfg: TimestepConfig,
                     g: torch.Generator, budget: int):
    """flow_loss over clips of different shapes z0[i] [1, C, t_i, h_i, w_i], packed into rows of
    `budget` tokens: the mean over clips of each clip's mean squared error (what flow_loss gives
    when the clips share a shape), so every clip counts once whatever its size."""
    n = len(z0)
    t = sample_timesteps(tcfg, n, generator=g).to(z0[0].device)
    x1 = [torch.randn(z.shape, generator=g).to(z.device) for z in z0]
    s = dist.share(n)
    mine = range(n)[s]
    v = model([interpolate(z0[i], x1[i], t[i:i + 1])[0] for i in mine], t[s], cond.index(s), budget=budget)
    return torch.stack([F.mse_loss(vi.float(), velocity(z0[i], x1[i])[0]) for vi, i in zip(v, mine)]).mean()


def prepare_cache(mc: ModelConfig, stage: DiTStage, vae: CausalVAE, *, run_dir: Path, seed: int, runtime: Runtime,
                  log: Log, world: str = "shapes", **_):
    """The text encoder and the stage's latent / text cache (built once, at run_dir/cache.safetensors).
    The cache depends on the VAE, the text encoder, the world and the data settings, not on the
    denoiser, so one cache serves every architecture (benchmarks/architectures.py)."""
    text_encoder = load_text_encoder(mc.text).to(runtime.device)
    check_widths(text_encoder, mc.dit)
    vae.to(runtime.device)
    path = run_dir / "cache.safetensors"
    if not dist.is_main():  # under torchrun rank 0 builds the cache, the others read it
        dist.barrier()
        return text_encoder, load_file(str(path))
    cache = build_cache(path, mc, stage, vae, text_encoder, seed, log, runtime, world=world)
    dist.barrier()
    return text_encoder, cache


def with_statistics(vae: CausalVAE, mc: ModelConfig) -> CausalVAE:
    """The VAE (its weights shared) that (de)normalises with mc's latent statistics; the caller's
    VAE and its config are left as they were."""
    vae = copy.copy(vae)
    vae.cfg = mc.vae
    return vae


def curriculum_limit(curriculum: tuple[tuple[int, ...], ...], step: int, spatial_factor: int) -> tuple[int | None, int | None]:
    """The (max latent frames, max latent side) of the curriculum stage that `step` is in; (None,
    None) before the first or without one."""
    limit: tuple[int | None, int | None] = (None, None)
    for entry in sorted(curriculum):  # (entries checked by DiTStage)
        if step >= entry[0]:
            limit = (entry[1], entry[2] // spatial_factor if len(entry) == 3 else None)
    return limit


def build_denoiser(mc: ModelConfig, seed: int, device, compile: bool = False, checkpointing: bool = False,
                   init_from: str | None = None, train_only: str | None = None) -> MMDiT:
    """The denoiser to train, initialised from the seed (or from the model directory `init_from`),
    with only `train_only`'s parameters trainable when set; activation checkpointing and
    torch.compile are applied from outside (in place: the state_dict keys do not change)."""
    torch.manual_seed(seed)
    model = MMDiT(mc.dit)
    if init_from:
        start_from(model, init_from)
    if train_only == "motion":
        if not model.motion:
            raise KinemaError("dit.train_only motion trains the motion modules: set model.dit.motion_modules true")
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("motion."))
    model = model.to(device)
    if checkpointing:
        dist.checkpoint_blocks(model)
    if compile:
        model.compile()
    return model


def start_from(model: MMDiT, root: str) -> None:
    """Load the denoiser of the exported model at `root` into `model`, whose config may differ only
    in frame_cond, hold_given, motion_modules, camera, camera_render, frame_stride and the attention patterns (masks, no weights:
    e.g. a frame-causal model for diffusion forcing from a full-attention one): weights `model` has
    and the source lacks (frame_in, ref_in, motion, camera_in, stride_in) keep their initialisation
    (all but ref_in start as the identity)."""
    from kinema.io.weights import load_json, load_weights

    path = Path(root)  # (that it holds dit.safetensors: recipe.check_sizes)
    source = from_dict(ModelConfig, load_json(path / "config.json")).dit
    free = ("frame_cond", "hold_given", "motion_modules", "camera", "camera_render", "frame_stride", "attention", "window")
    if dataclasses.replace(source, **{k: getattr(model.cfg, k) for k in free}) != model.cfg:
        raise KinemaError(f"dit.init_from {root}: its denoiser config differs from the recipe's model.dit beyond "
                          f"{', '.join(free)}; copy the model directory's config.json dit section into the recipe")
    missing, unexpected = model.load_state_dict(load_weights(path / "dit.safetensors"), strict=False)
    if unexpected or any(not k.startswith(("frame_in.", "ref_in.", "motion.", "camera_in.", "stride_in.")) for k in missing):
        raise KinemaError(f"dit.init_from {root}: its weights do not fit ({(unexpected or missing)[0]}); re-export it")


def train_dit(mc: ModelConfig, stage: DiTStage, vae: CausalVAE, *, run_dir: Path, seed: int, runtime: Runtime,
              resume: bool, log: Log, compile: bool = False, world: str = "shapes",
              shard: bool = False, sequence: bool = False,
              checkpointing: bool = False) -> tuple[ModelConfig, dict[str, torch.Tensor], str]:
    """Returns (model config with latent statistics, EMA weights of the DiT, text encoder name).
    The cache lives on runtime.device for the whole stage; batches and noise are drawn on the CPU."""
    device = runtime.device
    dist.check_batch(stage.batch_size, "dit.batch_size", stage.optim.accumulate)
    if stage.data:
        return train_dit_on_cache(mc, stage, vae, run_dir=run_dir, seed=seed, runtime=runtime, resume=resume, log=log,
                                  compile=compile, shard=shard, sequence=sequence, checkpointing=checkpointing)
    text_encoder, cache = prepare_cache(mc, stage, vae, run_dir=run_dir, seed=seed, runtime=runtime, log=log, world=world)
    mc = copy.deepcopy(mc)
    mean, std = latent_statistics(*(cache[k].transpose(0, 1).flatten(1) for k in ("latent_mean", "latent_logvar")),
                                  stage.sample_posterior)
    mc.vae.latent_mean, mc.vae.latent_std = tuple(mean.tolist()), tuple(std.tolist())
    vae = with_statistics(vae, mc)
    captions = CaptionSampler(cache, stage.canonical_prob, stage.caption_dropout, device)
    post_mean, post_logvar = (to_device(cache[k], device) for k in ("latent_mean", "latent_logvar"))
    combo = cache["combo"]
    if mc.dit.camera and "camera" not in cache:
        raise KinemaError(f"dit.camera: the {world} world has no camera; train camera control on world: photos")
    cameras = to_device(cache["camera"], device) if mc.dit.camera else None
    if mc.dit.camera_render and "render_mean" not in cache:
        raise KinemaError(f"dit.camera_render: {run_dir / 'cache.safetensors'} holds no camera renders (it was made "
                          f"for a model without them); delete it to rebuild it")
    renders = to_device(cache["render_mean"], device) if mc.dit.camera_render else None
    if mc.dit.frame_stride != ("stride" in cache):
        raise KinemaError("model.dit.frame_stride and dit.strides go together: train a frame-stride model at "
                          "several strides (e.g. dit.strides: [1, 2, 4]), and several strides with the condition")
    strides = to_device(cache["stride"], device) if mc.dit.frame_stride else None

    model = build_denoiser(mc, seed, device, compile, checkpointing, stage.init_from, stage.train_only)

    def loss_fn(m: MMDiT, step: int):
        g = seeded(seed, step)
        idx = torch.randint(post_mean.shape[0], (stage.batch_size,), generator=g)
        z0 = post_mean[idx.to(device)].float()
        if stage.sample_posterior:
            z0 = z0 + (0.5 * post_logvar[idx.to(device)].float()).exp() * torch.randn(z0.shape, generator=g).to(device)
        z0 = vae.normalize(z0)
        text = captions(combo[idx], g)
        frames = given_frames(z0, stage, g, mc.dit.frame_cond != "tokens")
        if renders is not None and frames is not None:  # the first frame's render, where the first frame is given
            frames.guide = frames.render_guide(vae.normalize(renders[idx.to(device)].float()))
        cam, stride = (None if x is None else x[idx.to(device)] for x in (cameras, strides))
        loss = flow_loss(m, z0, Conditioning(text, frames, cam, stride), stage.timesteps, g, stage.frame_noise)
        return loss, {}

    def sample_fn(m: MMDiT, ema, step: int):
        from kinema.pipelines.pipeline import Pipeline

        shadow = MMDiT(mc.dit).to(device)  # not a deepcopy: a compiled model's copy would still call the original
        shadow.load_state_dict(ema.state_dict())
        pipe = Pipeline(mc, vae, shadow, text_encoder, runtime=runtime)
        frames = pipe(list(stage.sample_prompts), num_frames=mc.frames, steps=25, seed=0)  # at the model's guidance
        write_gif(np.concatenate(list(frames), axis=2), run_dir / "samples" / f"sample_{step:07d}.gif", scale=2)

    ema = fit(model, loss_fn, steps=stage.steps, optim=stage.optim, run_dir=run_dir / "ckpt", config=to_dict(mc),
              log=log, ema_decay=stage.ema_decay, resume=resume, runtime=runtime, log_every=stage.log_every,
              ckpt_every=stage.ckpt_every, sample_fn=sample_fn, sample_every=stage.sample_every, desc="dit", shard=shard,
              sequence=sequence)
    return mc, dist.full(ema.state_dict()), mc.text.encoder


def train_dit_on_cache(mc: ModelConfig, stage: DiTStage, vae: CausalVAE, *, run_dir: Path, seed: int, runtime: Runtime,
                       resume: bool, log: Log, compile: bool = False, shard: bool = False,
                       sequence: bool = False, checkpointing: bool = False) -> tuple[ModelConfig, dict[str, torch.Tensor], str]:
    """train_dit on a `kinema prepare` cache (stage.data): each step's batch comes from one bucket
    of latent shape, drawn from (seed, step), captions dropped as for the worlds."""
    from kinema.data.latent_cache import LatentCache, dataset_summary

    device = runtime.device
    cache = LatentCache(stage.data, vae, mc.text)
    log(f"[dit] data {stage.data}: {dataset_summary(cache)}")
    if stage.pack_tokens:
        longest = max(math.prod(patch_grid(shape[1:], mc.dit.patch)) for shape in cache.shapes)
        if longest > stage.pack_tokens:
            raise KinemaError(f"the cache's longest clip has {longest} video tokens, over dit.pack_tokens "
                              f"{stage.pack_tokens}: raise it to at least {longest}")
    mc = copy.deepcopy(mc)
    mean, std = cache.channel_stats(stage.sample_posterior)
    mc.vae.latent_mean, mc.vae.latent_std = tuple(mean.tolist()), tuple(std.tolist())
    vae = with_statistics(vae, mc)
    model = build_denoiser(mc, seed, device, compile, checkpointing, stage.init_from, stage.train_only)

    def loss_fn(m: MMDiT, step: int):
        g = seeded(seed, step)
        limit = curriculum_limit(stage.curriculum, step, mc.vae.space_compression)
        if stage.pack_tokens:
            post_mean, post_logvar, text = cache.mixed_batch(stage.batch_size, g, *limit)
            post_mean, post_logvar = [mu[None] for mu in post_mean], [lv[None] for lv in post_logvar]  # [1, C, t, h, w] each
        else:
            post_mean, post_logvar, text = cache.batch(stage.batch_size, g, *limit)
            post_mean, post_logvar = [post_mean], [post_logvar]  # one tensor of one shape
        z0 = [mu.float() for mu in post_mean]
        if stage.sample_posterior:
            z0 = [z + (0.5 * lv.float()).exp() * torch.randn(z.shape, generator=g) for z, lv in zip(z0, post_logvar)]
        z0 = [vae.normalize(to_device(z, device)) for z in z0]
        cond = Conditioning(drop_captions(text.to(device), cache.empty, stage.caption_dropout, g))
        if stage.pack_tokens:
            return packed_flow_loss(m, z0, cond, stage.timesteps, g, stage.pack_tokens), {}
        cond.frames = given_frames(z0[0], stage, g, mc.dit.frame_cond != "tokens")
        return flow_loss(m, z0[0], cond, stage.timesteps, g, stage.frame_noise), {}

    ema = fit(model, loss_fn, steps=stage.steps, optim=stage.optim, run_dir=run_dir / "ckpt", config=to_dict(mc),
              log=log, ema_decay=stage.ema_decay, resume=resume, runtime=runtime, log_every=stage.log_every,
              ckpt_every=stage.ckpt_every, desc="dit", shard=shard, sequence=sequence)
    return mc, dist.full(ema.state_dict()), mc.text.encoder
