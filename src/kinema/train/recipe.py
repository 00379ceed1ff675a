"""`kinema train RECIPE.yaml`: VAE -> latent and text caches -> denoiser -> exported model.

Each stage checkpoints under `run_dir` and is skipped once complete, so `--resume` continues a
killed run wherever it stopped. The exported model directory holds config.json, vae.safetensors,
dit.safetensors and the training log: everything `kinema generate --model DIR` needs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kinema.config import ModelConfig, from_dict, load_yaml, merge, to_dict
from kinema.data.worlds import LEAVES, WORLDS, check_vae_world
from kinema.errors import KinemaError
from kinema.train.dit_stage import DiTStage
from kinema.train.trainer import Log
from kinema.train.vae_stage import DecoderStage, VAEStage

# "vae": the VAE and its decoder fine-tune; "cache": then the denoiser's latent and text cache;
# "all": then the denoiser and the export
STAGES = ("vae", "cache", "all")


@dataclass
class Recipe:
    name: str = "shapes"
    world: str = "shapes"  # the training data: "shapes" (level 1, one object) or "scenes" (level 2: one or two)
    seed: int = 0
    run_dir: str = "runs/shapes"  # checkpoints, caches, samples, log
    export_dir: str | None = None  # where the finished model is written (default: run_dir/model)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps (kinema.runtime)
    precision: str = "auto"  # auto | bf16 | fp16 | fp32: auto picks bf16 where the hardware runs it fast, else fp32
    compile: bool = False  # torch.compile the denoiser (GPUs; on a CPU the compile costs more than it saves)
    # recompute each denoiser block's activations in the backward instead of keeping them: less
    # memory for about one more forward per step (kinema.train.dist.checkpoint_blocks)
    activation_checkpointing: bool = False
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    # under torchrun: "ddp" (every process holds the whole denoiser), "fsdp" (FSDP2 shards the
    # denoiser's weights, gradients and optimizer state over the processes) or "sp" (sequence
    # parallelism: every process takes the same samples and a share of their video tokens,
    # Ulysses attention; cross-attention denoisers with full attention); the VAE stages use DDP
    parallel: str = "ddp"
    model: ModelConfig = field(default_factory=ModelConfig)
    vae: VAEStage = field(default_factory=VAEStage)
    vae_decoder: DecoderStage = field(default_factory=DecoderStage)  # steps 0: no decoder fine-tune
    dit: DiTStage = field(default_factory=DiTStage)

    @property
    def vae_world(self) -> str:
        """The world the VAE stages train on: vae.world where it is set, else the recipe's."""
        return self.vae.world or self.world


def load_recipe_dict(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """A recipe may start with `base: other.yaml` (relative to its own file) and list only what differs."""
    path = Path(path).resolve()
    if path in _chain:
        raise KinemaError(f"config {path.name}: 'base' files include each other in a loop")
    data = load_yaml(path)
    if "base" not in data:
        return data
    base = data.pop("base")
    parent = load_recipe_dict(path.parent / str(base), (*_chain, path))
    if parent.get("export_dir") and "export_dir" not in data and data.get("name", parent.get("name")) != parent.get("name"):
        # (a derived recipe once wrote its model over the shipped one it fine-tuned)
        raise KinemaError(f"config {path.name}: recipe {data['name']!r} would export to its base's export_dir "
                          f"{parent['export_dir']!r} (recipe {parent.get('name')!r}'s model); set export_dir in "
                          f"{path.name} (null: run_dir/model)")
    return merge(parent, data)


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    data = merge(load_recipe_dict(path), overrides or {})
    return from_dict(Recipe, data, where=Path(path).name)


def check_sizes(recipe: Recipe) -> None:
    """Every clip length a recipe trains on is 1 + r k for its VAE, the frame size a multiple of its
    spatial factor, the latent a whole number of the denoiser's patches, and the denoiser's input
    the VAE's latent: one clear line before any work, not an error from inside a model later."""
    v = recipe.model.vae
    r, s = v.time_compression, v.space_compression
    lengths = [("model.frames", recipe.model.frames)]
    if recipe.vae.steps:
        lengths += [("vae.frames", recipe.vae.frames),
                    *((f"vae.length_schedule[{i}]", f) for i, (_, f, _) in enumerate(recipe.vae.length_schedule))]
    if recipe.vae_decoder.steps:
        lengths.append(("vae_decoder.frames", recipe.vae_decoder.frames))
    for where, frames in lengths:
        if frames < 1 or (frames - 1) % r:
            raise KinemaError(f"{where} {frames} is not 1 + {r}k, as the {r}x{s}x{s} VAE (model.vae) needs; "
                              f"use e.g. {r + 1}, {2 * r + 1} or {4 * r + 1}")
    for where, n in (("model.height", recipe.model.height), ("model.width", recipe.model.width)):
        if n % s:
            raise KinemaError(f"{where} {n} is not a multiple of the VAE's spatial factor {s}; use e.g. {max(s, n // s * s)}")
    pt, ph, pw = recipe.model.dit.patch
    latent = ((recipe.model.frames - 1) // r + 1, recipe.model.height // s, recipe.model.width // s)
    for where, n, p, unit in (("model.frames", latent[0], pt, "frames"), ("model.height", latent[1], ph, "pixels"),
                              ("model.width", latent[2], pw, "pixels")):
        if n % p:
            raise KinemaError(f"{where} gives {n} latent {unit}, not a multiple of the denoiser's patch {p} "
                              f"(model.dit.patch); use a size that gives a multiple of {p} latent {unit}")
    dit, vae = recipe.model.dit, recipe.model.vae
    if dit.in_channels != vae.latent_channels:
        raise KinemaError(f"model.dit.in_channels {dit.in_channels} is not the VAE's latent_channels {vae.latent_channels}; "
                          f"set them equal (or use --arch, which fits the denoiser to the VAE)")
    if recipe.model.frames > 1 + r * 1024:
        raise KinemaError(f"model.frames {recipe.model.frames}: at most {1 + r * 1024} frames (1024 latent frames) "
                          f"train in one clip; generate longer clips with long-video routes")
    start = recipe.dit.init_from
    if start and not (Path(start) / "dit.safetensors").is_file():
        raise KinemaError(f"dit.init_from {start}: no dit.safetensors there; give a model directory written by kinema train")


def run(recipe: Recipe, *, resume: bool = False, stage: str = "all") -> Path | None:
    import torch

    from kinema.runtime import resolve_runtime

    if recipe.parallel not in ("ddp", "fsdp", "sp"):
        raise KinemaError(f"parallel {recipe.parallel!r}: use 'ddp', 'fsdp' or 'sp'")
    if recipe.dit.pack_tokens and not recipe.dit.data:
        raise KinemaError("dit.pack_tokens packs clips of mixed shapes from a prepared cache: give --data CACHE "
                          "(kinema prepare), or set dit.pack_tokens: 0")
    if stage not in STAGES:
        raise KinemaError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    if recipe.world not in WORLDS:
        raise KinemaError(f"unknown world {recipe.world!r}; choose from {', '.join(WORLDS)}")
    if recipe.vae.world:
        try:
            check_vae_world(recipe.vae.world)
        except ValueError as e:
            raise KinemaError(f"vae.world: {e}") from None
    pictures = {"photos", *LEAVES}  # the camera worlds, whose pictures a look recolours
    if recipe.vae.photo_augment and not pictures & set(recipe.vae_world.split("+")):
        raise KinemaError(f"vae.photo_augment: the VAE's world {recipe.vae_world!r} has no photographs or dead-leaves "
                          f"pictures; set vae.world to photos, leaves or a mix such as shapes+photos, or drop photo_augment")
    check_sizes(recipe)
    runtime = resolve_runtime(recipe.device, recipe.precision)  # a bad device or precision fails before any work
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    run_dir = Path(recipe.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = Log(run_dir / "train_log.txt")
    from kinema.train import dist
    from kinema.train.run_dir import check_identity, locked

    with locked(run_dir, log) if dist.is_main() else contextlib.nullcontext():  # one training per directory
        if dist.is_main():
            identity = {"seed": recipe.seed, "world": recipe.world, "vae_world": recipe.vae.world,
                        "model": to_dict(recipe.model), "data": recipe.dit.data,
                        "vae_photo_augment": recipe.vae.photo_augment}
            # what a run recorded before a setting existed reads as that setting's default
            defaults = {"model": to_dict(type(recipe.model)()), "vae_photo_augment": False}
            check_identity(run_dir, identity, resume, defaults=defaults)
            (run_dir / "recipe.json").write_text(json.dumps(to_dict(recipe), indent=2))
        return _run(recipe, run_dir, log, runtime, resume, stage)


def _run(recipe: Recipe, run_dir: Path, log: Log, runtime, resume: bool, stage: str) -> Path | None:
    from kinema.train.vae_stage import train_vae, tune_decoder

    log(f"[{recipe.name}] {runtime.describe()}")
    mc = recipe.model
    common = dict(seed=recipe.seed, runtime=runtime, resume=resume, log=log, world=recipe.world)

    vae_common = {**common, "world": recipe.vae_world, "augment": recipe.vae.photo_augment}
    vae = train_vae(mc.vae, recipe.vae, run_dir=run_dir / "vae", size=mc.height, **vae_common)
    if recipe.vae_decoder.steps:
        vae = tune_decoder(vae, recipe.vae_decoder, run_dir=run_dir / "vae_decoder", size=mc.height, **vae_common)
    if stage == "vae":
        return None
    from kinema.train.dit_stage import prepare_cache, train_dit

    if stage == "cache":
        prepare_cache(mc, recipe.dit, vae, run_dir=run_dir / "dit", **common)
        return None

    model_cfg, dit, encoder_name = train_dit(mc, recipe.dit, vae, run_dir=run_dir / "dit", compile=recipe.compile,
                                             checkpointing=recipe.activation_checkpointing,
                                             shard=recipe.parallel == "fsdp", sequence=recipe.parallel == "sp", **common)

    from kinema.pipelines.pipeline import save_model
    from kinema.train import dist

    export = Path(recipe.export_dir or run_dir / "model")
    if not dist.is_main():  # rank 0 exports
        return export
    save_model(export, model_cfg, vae.state_dict(), dit)
    shutil.copyfile(run_dir / "train_log.txt", export / "train_log.txt")
    log(f"exported model to {export} (text encoder: {encoder_name})")
    return export
