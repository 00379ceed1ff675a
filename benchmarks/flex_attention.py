"""Flex attention against SDPA with a dense mask, on this machine: the measurement behind
kinema.nn.flex's kernel choice.

    python benchmarks/flex_attention.py [--tokens 320] [--heads 4] [--batch 2] [--no-compile]

For a local 3D window mask over a video token grid (the most block-sparse pattern kinema has) it
prints the mask's density and, for the forward pass: SDPA with the dense mask, flex eager, and
flex compiled (with its one-time compile), plus building the BlockMask, and whether flex can
run backward here. Ratios are SDPA's time over flex's (> 1: flex is faster).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from kinema.nn.attention import video_mask
from kinema.nn.flex import block_mask, flex_available
from kinema.runtime import resolve_runtime


def timed(fn, repeats: int, sync) -> float:
    fn()
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tokens", type=int, default=320, help="video tokens: a (t, h, w) grid of t x 8 x 8 (320: t = 5)")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-compile", action="store_true")
    args = p.parse_args()
    if not flex_available():
        raise SystemExit("this PyTorch has no flex attention")
    from torch.nn.attention.flex_attention import flex_attention

    rt = resolve_runtime(args.device, "fp32")
    dev = rt.device
    grid = (args.tokens // 64, 8, 8)
    mask = video_mask("window", grid, (3, 3, 3), dev)
    q, k, v = (torch.randn(args.batch, args.heads, grid[0] * 64, args.head_dim, device=dev) for _ in range(3))
    print(f"{rt.describe()}\nwindow 3x3x3 over a {grid} grid: {q.shape[2]} tokens, density {mask.float().mean():.2f}, "
          f"batch {args.batch} x {args.heads} heads x {args.head_dim}")
    t0 = time.perf_counter()
    bm = block_mask(mask)
    rt.synchronize()
    print(f"create_block_mask: {time.perf_counter() - t0:.3f} s")
    with torch.no_grad():
        sdpa = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), 5, rt.synchronize)
        eager = timed(lambda: flex_attention(q, k, v, block_mask=bm), 2, rt.synchronize)
        print(f"forward: SDPA dense mask {sdpa * 1e3:.2f} ms; flex eager {eager * 1e3:.1f} ms (SDPA / flex {sdpa / eager:.3f})")
        if not args.no_compile:
            compiled = torch.compile(flex_attention, dynamic=False)
            t0 = time.perf_counter()
            compiled(q, k, v, block_mask=bm)
            rt.synchronize()
            first = time.perf_counter() - t0
            fast = timed(lambda: compiled(q, k, v, block_mask=bm), 5, rt.synchronize)
            print(f"forward: flex compiled {fast * 1e3:.2f} ms after a {first:.1f} s first call (SDPA / flex {sdpa / fast:.2f})")
    try:
        x = q.clone().requires_grad_()
        flex_attention(x, k, v, block_mask=bm).sum().backward()
        print("backward: flex runs backward here")
    except NotImplementedError as e:
        print(f"backward: none here ({str(e).split('.')[0]})")


if __name__ == "__main__":
    main()
