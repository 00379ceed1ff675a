"""What kinema.runtime's CPU bf16 check sees: matmul GFLOP/s in fp32 and bf16 at several sizes,
the check's own 256^3 speedup and its verdict, and what it cost.

    python benchmarks/cpu_bf16.py
    ONEDNN_MAX_CPU_ISA=AVX512_CORE ATEN_CPU_CAPABILITY=avx512 python benchmarks/cpu_bf16.py   # AVX512 without BF16
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/cpu_bf16.py              # a Zen 3 / laptop

The capped runs let one machine with AVX512_BF16 stand in for the CPUs without it.
"""

from __future__ import annotations

import os
import time

import torch

from kinema.runtime import cpu_model, matmul_seconds, probe_cpu_bf16


def main() -> None:
    capped = ", ".join(f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k))
    print(f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads{f' ({capped})' if capped else ''}")
    print("| n | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 |")
    print("|---:|---:|---:|---:|")
    for n in (128, 256, 512, 1024):
        f32, b16 = (2 * n**3 / matmul_seconds(dtype, n) / 1e9 for dtype in (torch.float32, torch.bfloat16))
        print(f"| {n} | {f32:.1f} | {b16:.1f} | {b16 / f32:.3g} |")
    t0 = time.perf_counter()
    probe = probe_cpu_bf16(env={})
    cost = time.perf_counter() - t0
    print(f"check: {probe.how}; bf16 {'fast' if probe.native else 'slow'}, so auto picks "
          f"{'bf16' if probe.native else 'fp32'}; it took {1000 * cost:.0f} ms; OS bf16 flags: {', '.join(probe.flags) or 'none'}")


if __name__ == "__main__":
    main()
