"""The step-0 VAE of a linear-path run, as its VAE stage builds it before the first step: the
recipe's architecture with seed-`--seed` weights, the linear path fitted to PCA of the stage's
`--clips` clips of `--world` (kinema.train.vae_stage.fit_linear_start, which the stage calls). The networks' output
convolutions start at zero, so this VAE *is* the linear coder. The stage writes no step-0
checkpoint; this writes one beside the run, for benchmarks/vae_photo_diagnosis.py and kinema eval vae.

    python benchmarks/vae_linear_step0.py --like runs/vae_leaves_linear/vae/ckpt/step_0000900 \
        --world photos+leaves --out runs/vae_leaves_linear/step0
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from kinema.config import VAEConfig, from_dict
from kinema.train.vae_stage import fit_linear_start
from kinema.vae.autoencoder import CausalVAE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--like", required=True, help="a checkpoint directory of the run (its config.json is the architecture)")
    ap.add_argument("--world", required=True, help="the run's vae.world, e.g. photos or photos+leaves")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0, help="the recipe's seed")
    ap.add_argument("--clips", type=int, default=200, help="the recipe's vae.linear_init_clips")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    like, out = Path(args.like), Path(args.out)
    cfg = from_dict(VAEConfig, json.loads((like / "config.json").read_text()))
    if not cfg.linear_path:
        raise SystemExit(f"{like}: its VAE has no linear path (model.vae.linear_path), so it has no PCA start")
    torch.manual_seed(args.seed)
    vae = CausalVAE(cfg)
    kept = fit_linear_start(vae, args.seed, args.clips, args.size, args.world)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(like / "config.json", out / "config.json")
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / "model.safetensors"))
    print(f"wrote {out}: PCA of {args.clips} clips keeps {kept['first']:.1%} of frame 0's patch variance, "
          f"{kept['rest']:.1%} of the later frames'")


if __name__ == "__main__":
    main()
