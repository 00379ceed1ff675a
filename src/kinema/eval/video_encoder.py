"""kinema's own video encoder for offline evaluation: a small 3D conv net trained contrastively
against the frozen MiniLM text encoder (CLIP's loss) on world clips the generators never train
on. It serves as the feature extractor of the distribution distances (FD, KVD; kinema.eval.
distances) and as an offline text-video retrieval score, where no I3D or CLIP is at hand.

It is neither the generator's VAE nor its text encoder: a distance measured with the generator's
own features would reward the generator for its own biases.

    kinema eval train-encoder --out runs/encoder --steps 2000   # resumes with --resume
    features = load_encoder("runs/encoder")                    # a VideoFeatureExtractor

Training clips: Shapes level 1 and level 2 scenes on the seen colour-shape pairs, from seeds no
generator recipe draws (ENCODER_SEED onwards), with their canonical captions. Clips with the same
caption in a batch are all positives of each other (a multi-positive InfoNCE).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinema.data import scenes, shapes
from kinema.data.captions import canonical_caption
from kinema.errors import KinemaError
from kinema.eval.features import FeatureSpec, fit_clip, sha256_of
from kinema.eval.videos import mean_ci

ENCODER_SEED = 7_000_000_000  # clip seeds from here: apart from every generator recipe's draws
NAME = "kinema-shapes-video-encoder"
SHIPPED = "video-encoder"  # src/kinema/weights/video-encoder: `kinema eval train-encoder --steps 2000`, its log beside it


@dataclass(frozen=True)
class EncoderConfig:
    channels: tuple[int, ...] = (32, 64, 128, 256)
    dim: int = 256          # the feature width D
    text_dim: int = 384     # MiniLM's pooled width
    frames: int = 8         # clips are sampled to this many frames (kinema.eval.features.fit_clip)
    size: int = 32          # and resized to this side


class VideoEncoder(nn.Module):
    """[B, 3, T, H, W] in [-1, 1] -> features [B, dim]: 3D conv blocks (each halving space, and time
    after the first), global average pooling, a linear layer. `text_proj` maps the frozen text
    encoder's pooled vector into the same space for the contrastive loss."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        layers, c_in = [], 3
        for i, c in enumerate(cfg.channels):
            stride = (1 if i == 0 else 2, 2, 2)
            layers += [nn.Conv3d(c_in, c, 3, stride=stride, padding=1), nn.GroupNorm(8, c), nn.SiLU()]
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, cfg.dim)
        self.text_proj = nn.Linear(cfg.text_dim, cfg.dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))  # CLIP's initial temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x).mean(dim=(2, 3, 4)))  # [B, dim]


def contrastive_loss(video: torch.Tensor, text: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over a batch: video [B, D], text [B, D], keys [B] (equal keys: the same
    caption, each a positive of the others), scale the logit scale (log)."""
    v, t = F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)
    logits = scale.exp().clamp(max=100) * v @ t.T  # [B, B]
    same = (keys[:, None] == keys[None]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def encoder_batch(step: int, batch_size: int, frames: int = 17, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """uint8 clips [B, T, H, W, 3] and their canonical captions: half level 1, half level 2."""
    videos, captions = [], []
    seen = shapes.combos(held_out=False)
    for i in range(batch_size):
        seed = ENCODER_SEED + step * batch_size + i
        if i % 2 == 0:
            combo = seen[seed % len(seen)]
            videos.append(shapes.sample_clip(seed, combo, frames=frames, size=size)[0])
            captions.append(canonical_caption(*combo))
        else:
            video, scene, _ = scenes.sample_scene_clip(seed, frames=frames, size=size)
            videos.append(video)
            captions.append(scenes.scene_caption(scene))
    return np.stack(videos), captions


class EncoderExtractor:
    """A trained VideoEncoder as a VideoFeatureExtractor (kinema.eval.features)."""

    def __init__(self, model: VideoEncoder, weights_hash: str):
        self.model = model.eval()
        c = model.cfg
        self.spec = FeatureSpec(NAME, weights_hash, c.frames, c.size, (-1.0, 1.0), c.dim)

    @torch.no_grad()
    def __call__(self, videos: np.ndarray) -> np.ndarray:
        return self.model(fit_clip(videos, self.spec)).double().numpy()

    @torch.no_grad()
    def text(self, pooled: torch.Tensor) -> np.ndarray:
        """The text side of the shared space: MiniLM pooled vectors [B, 384] -> [B, dim]."""
        return self.model.text_proj(pooled.float()).double().numpy()


def save_encoder(out: Path, model: VideoEncoder) -> Path:
    from kinema.io.weights import save_weights

    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "encoder.safetensors", {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})
    (out / "encoder.json").write_text(json.dumps({"name": NAME, **asdict(model.cfg)}, indent=1))
    return out


def load_encoder(path: str | Path) -> EncoderExtractor:
    from kinema.io.weights import load_weights
    from kinema.pipelines.registry import resolve

    path = resolve(path)
    weights = path / "encoder.safetensors"
    if not weights.is_file() or not (path / "encoder.json").is_file():
        raise KinemaError(f"no trained video encoder at {path}; train one with `kinema eval train-encoder --out {path}`")
    meta = json.loads((path / "encoder.json").read_text())
    cfg = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta.items() if k != "name"})
    model = VideoEncoder(cfg)
    model.load_state_dict(load_weights(weights))
    return EncoderExtractor(model, sha256_of(weights))


def train_encoder(out: str | Path, steps: int = 2000, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                  resume: bool = False, device: str = "auto", precision: str = "auto",
                  cfg: EncoderConfig = EncoderConfig()) -> Path:
    """Train the encoder (checkpoints in out/ckpt: a killed run continues with resume) and export
    out/encoder.safetensors + encoder.json."""
    from kinema.config import TextConfig
    from kinema.runtime import resolve_runtime, to_device
    from kinema.text.encoders import load_text_encoder
    from kinema.train.trainer import Log, OptimConfig, fit

    out = Path(out)
    runtime = resolve_runtime(device, precision)
    log = Log(out / "train_log.txt")
    log(f"[encoder] {runtime.describe()}")
    torch.manual_seed(seed)
    model = VideoEncoder(cfg).to(runtime.device)
    text_encoder = load_text_encoder(TextConfig()).to(runtime.device)
    spec = FeatureSpec(NAME, "", cfg.frames, cfg.size, (-1.0, 1.0), cfg.dim)

    def loss_fn(m: nn.Module, step: int):
        videos, captions = encoder_batch(step, batch_size)
        keys = torch.tensor([captions.index(c) for c in captions])  # the same caption, the same key
        with torch.no_grad():
            pooled = text_encoder(captions).pooled.float()
        x = to_device(fit_clip(videos, spec), runtime.device)
        net = m.module if hasattr(m, "module") else m
        loss = contrastive_loss(m(x), net.text_proj(pooled), keys.to(runtime.device), net.logit_scale)
        return loss, {"scale": float(net.logit_scale.detach().exp())}

    fit(model, loss_fn, steps=steps, optim=OptimConfig(lr=lr, warmup=min(100, steps // 10)), run_dir=out / "ckpt",
        config={"encoder": asdict(cfg)}, log=log, resume=resume, runtime=runtime, desc="encoder")
    save_encoder(out, model.cpu())
    log(f"[encoder] exported to {out}")
    return out


def retrieval(extractor: EncoderExtractor, videos: np.ndarray, prompts: list[str], text_encoder) -> dict[str, float]:
    """Text-to-video retrieval within a set of clips and their prompts: R@1 (the prompt's own clip
    ranks first among all clips; clips sharing a prompt count as one) with its bootstrap 95%
    interval over the queries (the clips stay fixed), and the mean cosine of each clip to its prompt
    against the mean to the others."""
    v = extractor(videos)
    t = extractor.text(text_encoder(prompts).pooled)
    v, t = v / np.linalg.norm(v, axis=1, keepdims=True), t / np.linalg.norm(t, axis=1, keepdims=True)
    sim = t @ v.T  # [prompts, clips]
    same = np.array([[a == b for b in prompts] for a in prompts])
    hits = same[np.arange(len(prompts)), sim.argmax(axis=1)]  # [prompts]: its top clip has its prompt
    r1, low, high = mean_ci(hits)
    return {"r_at_1": r1, "r_at_1_low": low, "r_at_1_high": high, "cos_own": float(sim[same].mean()),
            "cos_other": float(sim[~same].mean()) if (~same).any() else float("nan")}
