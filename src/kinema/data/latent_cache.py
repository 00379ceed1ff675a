"""The latent and text cache of a folder of videos: encoded once by `kinema prepare`, read by training.

    kinema prepare my_videos/ --out cache/ --model shapes        # the model's VAE and text encoder
    kinema train recipe.yaml --data cache/                        # the denoiser trains from it

Layout of cache/:
    settings.json                 the VAE's and the text encoder's fingerprints, the clip settings
    empty.safetensors             the empty caption's states (classifier-free guidance)
    shard_RRRRR_SSSSS.safetensors samples of rank R's shard S: "mean.K", "logvar.K" [C, t, h, w] fp16,
                                  "tokens.K" [L, D] fp32 (as inference encodes them), "mask.K" [L], "pooled.K" [D]
    part_RRRRR.jsonl              rank R's samples, one line each ({"file", "caption", "shard", "key",
                                  "shape"}), appended only after their shard is on disk; skipped
                                  files too ({"file", "skipped": reason})

Resumable: a restarted prepare reads the part files and encodes only the files they do not name.
Data-parallel: under torchrun each rank takes the files i with i % world == rank and writes its
own shards and part file; no rank waits for another. Every clip's frames are drawn from
(seed, file index), so any split and any restart give the same cache.

A cache made by another VAE or text encoder is refused: training compares the fingerprints.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from kinema.data.folder import VideoFolder
from kinema.data.shapes import to_tensor
from kinema.errors import KinemaError
from kinema.io.weights import load_weights, save_weights
from kinema.text.encoders import TextStates
from kinema.vae.autoencoder import latent_statistics


def vae_fingerprint(vae) -> str:
    """sha256 of the VAE's config and weights: two caches agree only if made by the same VAE. The
    latent statistics a trained model stores in its config are left out: they do not change the
    latents."""
    arch = {k: v for k, v in asdict(vae.cfg).items() if k not in ("latent_mean", "latent_std")}
    h = hashlib.sha256(json.dumps(arch, sort_keys=True, default=str).encode())
    for k, v in sorted(vae.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def text_fingerprint(text_cfg) -> str:
    pooled = getattr(text_cfg, "pooled_encoder", None)
    return f"{text_cfg.encoder}:{text_cfg.max_tokens}" + (f"+pooled:{pooled}" if pooled else "")


@dataclass
class ClipSettings:
    frames: int = 17
    height: int = 64
    width: int = 64
    fps: float = 8.0
    crop: str = "center"
    seed: int = 0
    sizes: tuple[tuple[int, int], ...] = ()  # buckets by aspect (kinema.data.folder); () is (height, width) alone
    durations: tuple[int, ...] = ()  # buckets by length; () is `frames` alone


def _append_line(path: Path, item: dict) -> None:
    """One JSON line, flushed and fsynced: a crash leaves whole lines only (a torn last line is ignored)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(item) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_parts(root: Path) -> list[dict]:
    items = []
    for part in sorted(root.glob("part_*.jsonl")):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash: its file is encoded again
                continue
    return items


@torch.no_grad()
def prepare(data: str | Path, out: str | Path, vae, text_encoder, text_cfg, settings: ClipSettings, *,
            runtime, rank: int = 0, world: int = 1, shard_size: int = 64, log=print) -> dict:
    """Encode every readable file of `data` (its share, under torchrun) into `out`. Returns counts."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folder = VideoFolder(data, frames=settings.frames, height=settings.height, width=settings.width, fps=settings.fps,
                         time_compression=vae.cfg.time_compression, crop=settings.crop, sizes=settings.sizes,
                         durations=settings.durations)
    clips = json.loads(json.dumps(asdict(settings)))  # tuples as lists, as settings.json holds them
    meta = {"vae": vae_fingerprint(vae), "text": text_fingerprint(text_cfg), "clips": clips,
            "latent_channels": vae.cfg.latent_channels}
    settings_path = out / "settings.json"
    if settings_path.is_file():
        before = json.loads(settings_path.read_text())
        if before != meta:
            raise KinemaError(f"{out} holds a cache made with other settings or another VAE / text encoder "
                              f"({before}); choose another --out or delete it")
    elif rank == 0:
        settings_path.write_text(json.dumps(meta, indent=2))
    if rank == 0 and not (out / "empty.safetensors").is_file():
        empty = text_encoder([""]).to("cpu")
        save_weights(out / "empty.safetensors", {"tokens": empty.tokens.float(), "mask": empty.mask, "pooled": empty.pooled})
    done = {item["file"] for item in read_parts(out)}
    mine = [i for i in range(len(folder)) if i % world == rank]
    todo = [i for i in mine if str(folder.files[i].relative_to(folder.root)) not in done]
    part = out / f"part_{rank:05d}.jsonl"
    shard_no = len(list(out.glob(f"shard_{rank:05d}_*.safetensors")))
    vae = vae.to(runtime.device).eval()
    encoded = 0
    for start in range(0, len(todo), shard_size):
        tensors, lines = {}, []
        for i in todo[start:start + shard_size]:
            rel = str(folder.files[i].relative_to(folder.root))
            clip, caption = folder.clip(i, settings.seed)
            if clip is None:
                lines.append({"file": rel, "skipped": folder.skipped.files[rel]})
                continue
            with runtime.autocast():
                mean, logvar = vae.encode(to_tensor(clip)[None].to(runtime.device))
            text = text_encoder([caption]).to("cpu")
            key = str(len(lines))
            tensors.update({f"mean.{key}": mean[0].float().half().cpu(), f"logvar.{key}": logvar[0].float().half().cpu(),
                            f"tokens.{key}": text.tokens[0].float(), f"mask.{key}": text.mask[0], f"pooled.{key}": text.pooled[0]})
            lines.append({"file": rel, "caption": caption, "key": key, "shape": list(mean.shape[1:])})
            encoded += 1
        shard = f"shard_{rank:05d}_{shard_no:05d}.safetensors"
        if tensors:
            tmp = out / f".{shard}.tmp"
            save_weights(tmp, tensors)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, out / shard)
            shard_no += 1
        for line in lines:  # only now that the shard is durable
            _append_line(part, {**line, "shard": shard} if "key" in line else line)
        log(f"[prepare] rank {rank}: {min(start + shard_size, len(todo))}/{len(todo)} files")
    report = folder.report()
    if folder.skipped:
        log(f"[prepare] {report}")
    return {"encoded": encoded, "skipped": len(folder.skipped), "already": len(mine) - len(todo)}


class LatentCache:
    """The samples of a prepared cache, grouped into buckets by latent shape (t, h, w): a batch
    always comes from one bucket. Everything is loaded into memory (the caches kinema trains on
    in tests and on a CPU are small); `batch` draws from the generator only, so a step's batch
    depends on (seed, step) alone and a resumed run sees the same batches."""

    def __init__(self, root: str | Path, vae=None, text_cfg=None):
        self.root = Path(root)
        settings = self.root / "settings.json"
        if not settings.is_file():
            raise KinemaError(f"{self.root} is not a kinema cache (no settings.json); make one with `kinema prepare DATA --out {root}`")
        self.settings = json.loads(settings.read_text())
        if vae is not None and self.settings["vae"] != vae_fingerprint(vae):
            raise KinemaError(f"{self.root} was encoded by another VAE than this recipe's; run `kinema prepare` again "
                              f"with this model's VAE, or train with the VAE that made it")
        if text_cfg is not None and self.settings["text"] != text_fingerprint(text_cfg):
            raise KinemaError(f"{self.root} was encoded with text encoder {self.settings['text']}, the recipe uses "
                              f"{text_fingerprint(text_cfg)}; prepare the cache again")
        items = [it for it in read_parts(self.root) if "key" in it]
        if not items:
            raise KinemaError(f"{self.root} holds no encoded clips; run `kinema prepare` (its report names skipped files)")
        try:
            shards = {name: load_weights(self.root / name) for name in sorted({it["shard"] for it in items})}
            empty = load_weights(self.root / "empty.safetensors")
        except KinemaError as e:  # a truncated or missing shard
            raise KinemaError(f"the cache {self.root} is damaged ({e}); run `kinema prepare` again into a new --out") from None
        missing = [it["file"] for it in items if f"mean.{it['key']}" not in shards[it["shard"]]]
        if missing:
            raise KinemaError(f"{self.root}: {len(missing)} clips of the index are missing from their shards (first: "
                              f"{missing[0]}); run `kinema prepare` again into a new --out")
        self.buckets: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}
        groups: dict[tuple[int, ...], list[dict]] = {}
        for it in sorted(items, key=lambda it: it["file"]):  # a fixed order, whatever the ranks and restarts were
            groups.setdefault(tuple(it["shape"]), []).append(it)
        for shape, group in sorted(groups.items()):
            def stack(name):
                return torch.stack([shards[it["shard"]][f"{name}.{it['key']}"] for it in group])
            self.buckets[shape] = {k: stack(k) for k in ("mean", "logvar", "tokens", "mask", "pooled")}
        self.shapes = list(self.buckets)
        self.sizes = torch.tensor([len(groups[s]) for s in self.shapes], dtype=torch.float64)
        self.empty = TextStates(empty["tokens"].float(), empty["mask"], empty["pooled"])

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def channel_stats(self, sampled: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std over every latent element of every bucket, of the posterior means
        or (sampled) of posterior samples: kinema.vae.autoencoder.latent_statistics."""
        def flat(name):
            return torch.cat([b[name].float().transpose(0, 1).flatten(1) for b in self.buckets.values()], dim=1)
        return latent_statistics(flat("mean"), flat("logvar"), sampled)

    def allowed(self, max_frames: int | None = None, max_side: int | None = None) -> list[tuple[int, ...]]:
        """The bucket shapes a curriculum stage trains on: at most `max_frames` latent frames (1:
        images alone) and a longer latent side of at most `max_side` (low resolution first)."""
        shapes = [s for s in self.shapes if (max_frames is None or s[1] <= max_frames) and (max_side is None or max(s[2:]) <= max_side)]
        if not shapes:
            raise KinemaError(f"the cache has no clip of at most {max_frames} latent frames and latent side {max_side} for "
                              f"the curriculum; its buckets (C, t, h, w) are {self.shapes}")
        return shapes

    def batch(self, batch_size: int, g: torch.Generator, max_frames: int | None = None,
              max_side: int | None = None) -> tuple[torch.Tensor, torch.Tensor, TextStates]:
        """(mean, logvar) [B, C, t, h, w] and text states from one bucket (of the `allowed` ones),
        drawn with probability proportional to its size; samples with replacement."""
        allowed = set(self.allowed(max_frames, max_side))
        sizes = torch.where(torch.tensor([s in allowed for s in self.shapes]), self.sizes, 0.0)
        b = self.shapes[int(torch.multinomial(sizes, 1, generator=g))]
        bucket = self.buckets[b]
        idx = torch.randint(bucket["mean"].shape[0], (batch_size,), generator=g)
        text = TextStates(bucket["tokens"][idx].float(), bucket["mask"][idx], bucket["pooled"][idx])
        return bucket["mean"][idx], bucket["logvar"][idx], text

    def mixed_batch(self, batch_size: int, g: torch.Generator, max_frames: int | None = None,
                    max_side: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor], TextStates]:
        """Clips of any shapes for a packed batch (kinema.dit.packing): `batch_size` clips drawn
        uniformly from the `allowed` buckets -> (mean, logvar) lists of [C, t, h, w] and text
        states [B, ...]. Samples with replacement."""
        shapes = set(self.allowed(max_frames, max_side))
        allowed = [(s, int(n)) for s, n in zip(self.shapes, self.sizes.tolist()) if s in shapes]
        starts = torch.tensor([0] + [n for _, n in allowed]).cumsum(0)  # bucket b holds flat indices [starts[b], starts[b + 1])
        picks = torch.randint(int(starts[-1]), (batch_size,), generator=g)
        means, logvars, rows = [], [], []
        for flat in picks.tolist():
            b = int(torch.searchsorted(starts, flat, right=True)) - 1
            bucket, j = self.buckets[allowed[b][0]], flat - int(starts[b])
            means.append(bucket["mean"][j])
            logvars.append(bucket["logvar"][j])
            rows.append((bucket, j))
        # (float before stacking: caches before v0.x hold fp16 tokens, which stack refuses under a CPU autocast)
        text = TextStates(*(torch.stack([bk[k][j].float() if bk[k].is_floating_point() else bk[k][j] for bk, j in rows])
                            for k in ("tokens", "mask", "pooled")))
        return means, logvars, text


def dataset_summary(cache: LatentCache) -> str:
    parts = ", ".join(f"{int(n)} x {'x'.join(map(str, s))}" for s, n in zip(cache.shapes, cache.sizes))
    return f"{len(cache)} clips in {len(cache.shapes)} bucket(s) of latent shape (C, t, h, w): {parts}"
