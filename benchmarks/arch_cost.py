"""The cost of every denoiser preset, without training anything: parameters, and forward GFLOPs per
sample (kinema.dit.cost) on the Shapes model's grid and on a 720p x 48-frame video.

    python benchmarks/arch_cost.py

"pattern" counts what each block's attention pattern needs (a block-sparse kernel's cost);
"computed" what kinema's kernels run today (a masked SDPA computes every pair; the spatial and
temporal layouts of cross blocks are reshapes and compute only their own pairs).
"""

from __future__ import annotations

from kinema.config import ARCHS, DIT_PRESETS
from kinema.dit.cost import dit_flops, token_grid
from kinema.dit.transformer import MMDiT

GRIDS = {"Shapes 17x64x64 (80 tokens)": token_grid(17, 64, 64, causal=True),
         "720p x 48 frames (43 200 tokens)": token_grid(48, 720, 1280)}


def main() -> None:
    names = ["shapes", *ARCHS]
    head = " | ".join(f"{g}: pattern / computed" for g in GRIDS)
    print(f"| preset | params | blocks | attention | {head} |")
    print("|---|---:|---|---|" + "---:|" * len(GRIDS))
    for name in names:
        cfg = DIT_PRESETS[name]
        params = sum(p.numel() for p in MMDiT(cfg).parameters()) / 1e6
        blocks = ", ".join(f"{n} {k}" for k, n in (("dual", cfg.dual_blocks), ("single", cfg.single_blocks),
                                                   ("cross", cfg.cross_blocks)) if n)
        cells = []
        for grid in GRIDS.values():
            pattern, computed = (dit_flops(cfg, grid, 24, computed=c)["total"] / 1e9 for c in (False, True))
            cells.append(f"{pattern:,.1f} / {computed:,.1f}")
        print(f"| {name} | {params:.2f} M | {blocks} | {'/'.join(cfg.attention)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
