"""Block matching's cost at decode time (kinema.vae.carry.matched): peak memory and time of one frame,
the moves taken one at a time with a running softmax (decoding, no gradients) against all 81 stacked
(training's path, forced here by a previous frame that needs a gradient). Each path runs in a fresh
process, so its peak resident memory is its own.

    python benchmarks/vae_carry_match_memory.py [--size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, resource, sys, time, torch
from kinema.vae.carry import matched
size, stacked = int(sys.argv[1]), sys.argv[2] == "stacked"
g = torch.Generator().manual_seed(0)
y, prev = torch.randn(1, 3, size, size, generator=g), torch.randn(1, 3, size, size, generator=g)
prev.requires_grad_(stacked)
matched(y[..., :16, :16], prev[..., :16, :16], 0.01)  # first-call setup outside the measure
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
matched(y, prev, 0.01)
seconds = time.perf_counter() - t0
print(json.dumps({"peak_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, "seconds": seconds}))
"""


def measure(size: int, path: str, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(size), path], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    one, stacked = (measure(args.size, p, args.threads) for p in ("one_at_a_time", "stacked"))
    print(f"| block matching, one {args.size}x{args.size} frame, {args.threads} thread(s) | peak rise (MB) | seconds |")
    print("|---|---:|---:|")
    print(f"| moves one at a time (decoding) | {one['peak_mb']:.0f} | {one['seconds']:.2f} |")
    print(f"| all 81 stacked (training) | {stacked['peak_mb']:.0f} | {stacked['seconds']:.2f} |")
    print(f"stacked / one at a time: memory {stacked['peak_mb'] / max(one['peak_mb'], 1e-9):.1f}x, "
          f"time {stacked['seconds'] / one['seconds']:.2f}x")


if __name__ == "__main__":
    main()
