"""Tiny-config harness shared by every test: tiny presets, tiny recipe, a tiny trained model."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from kinema.config import DIT_PRESETS, VAE_PRESETS, ModelConfig, TextConfig
from kinema.dit.transformer import Conditioning
from kinema.text.encoders import TextStates


def tiny_model_config() -> ModelConfig:
    return ModelConfig(vae=copy.deepcopy(VAE_PRESETS["tiny"]), dit=copy.deepcopy(DIT_PRESETS["tiny"]),
                       text=TextConfig(max_tokens=16), frames=9, height=32, width=32)


def tiny_recipe_dict(run_dir: Path, vae_steps: int = 4, dit_steps: int = 4) -> dict:
    return {
        "name": "tiny", "seed": 0, "run_dir": str(run_dir), "precision": "auto",
        "model": {"frames": 9, "height": 32, "width": 32,
                  "vae": {"latent_channels": 4, "base_channels": 8, "channel_mult": [1, 2, 2], "temporal_down": [True, True]},
                  "dit": {"in_channels": 4, "dim": 32, "heads": 2, "dual_blocks": 1, "single_blocks": 1, "mlp_ratio": 2.0},
                  "text": {"max_tokens": 16}},
        "vae": {"steps": vae_steps, "batch_size": 2, "frames": 5, "log_every": 2, "ckpt_every": 2, "sample_every": 0},
        "dit": {"steps": dit_steps, "batch_size": 4, "num_clips": 8, "captions_per_combo": 2, "log_every": 2,
                "ckpt_every": 2, "sample_every": 0},
    }


def random_text(batch: int, tokens: int = 6, dim: int = 384, valid: int = 4, seed: int = 0) -> Conditioning:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, tokens, dtype=torch.bool)
    mask[:, :valid] = True
    t = torch.randn(batch, tokens, dim, generator=g) * mask[..., None]
    return Conditioning(TextStates(t, mask, torch.randn(batch, dim, generator=g)))


def randomize_(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (zero-initialised gates would make many tests trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny model trained end to end by the real recipe code (a few steps: not a good model)."""
    from kinema.config import from_dict
    from kinema.train.recipe import Recipe, run

    run_dir = tmp_path_factory.mktemp("tinyrun")
    recipe = from_dict(Recipe, tiny_recipe_dict(run_dir))
    return run(recipe)
