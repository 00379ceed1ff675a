"""Flex attention for block-sparse masks, and the choice between it and SDPA, made per device.

A pattern mask (window, causal, and spatial / temporal / window inside MM-DiT's joint sequence)
leaves most (query, key) blocks empty. SDPA with a dense mask still computes every pair; flex
attention, compiled, skips the empty blocks. Whether that wins depends on the device, so kinema
does not assume it. `python benchmarks/flex_attention.py` on a 2-core CPU (torch 2.13; a 3x3x3
window over 320 video tokens, density 0.06, 2 x 4 heads x 64), forward only:

- flex attention has no backward on the CPU at all (NotImplementedError): training there must use SDPA
- building the BlockMask takes 1.6 s; the eager flex forward 76 ms against SDPA's 16 ms
- compiled flex takes 5 ms (3x faster than SDPA), but only after a 10.6 s compile, paid again for
  every new shape: 50 guided sampling steps of a 6-block model save about 3 s of it

So on the CPU kinema always uses SDPA. On any other device (CUDA: flex compiles to a block-sparse
Triton kernel), the first masked call of each shape and mask density times both kernels on that
call's own inputs and keeps the faster for the rest of the process.

`KINEMA_ATTENTION=sdpa` or `=flex` forces one kernel (flex on the CPU works without gradients only,
which the equivalence tests use).
"""

from __future__ import annotations

import functools
import os
import time

import torch
import torch.nn.functional as F

from kinema.errors import KinemaError

KERNELS = ("auto", "sdpa", "flex")
_choices: dict[tuple, str] = {}  # (device, shape, density) -> the measured winner
_block_masks: dict[tuple, object] = {}  # one entry: the last dense mask's BlockMask
_compiled = None


@functools.cache
def flex_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def requested_kernel() -> str:
    kernel = os.environ.get("KINEMA_ATTENTION", "auto")
    if kernel not in KERNELS:
        raise KinemaError(f"KINEMA_ATTENTION={kernel!r}: use one of {', '.join(KERNELS)}")
    return kernel


def choose_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> str:
    """"sdpa" or "flex" for this call. Only a full [.., Lq, Lk] mask can be block-sparse; no mask
    and key-padding masks ([.., 1, Lk]) always take SDPA (FlashAttention / its fused kernels)."""
    kernel = requested_kernel()
    if mask is None or mask.shape[-2] == 1 or kernel == "sdpa" or not (mask.dim() == 2 or mask.dim() == 4 and mask.shape[1] == 1):
        return "sdpa"
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
    if kernel == "flex":
        if q.device.type == "cpu" and grad:
            raise KinemaError("KINEMA_ATTENTION=flex: flex attention has no backward on the CPU; unset it to train here")
        return "flex"
    if q.device.type == "cpu" or not flex_available():
        return "sdpa"  # measured: see the module docstring
    choice = getattr(mask, "_kinema_kernel", None)  # a model builds each mask once per forward for all blocks:
    if choice is None:  # the density (a device sync) is read once per mask, not once per block
        density = round(float(mask.float().mean()), 1)
        key = (str(q.device), q.dtype, tuple(q.shape), tuple(k.shape), density)
        if key not in _choices:
            _choices[key] = _measure(q, k, v, mask)
        choice = mask._kinema_kernel = _choices[key]
    return choice


def _measure(q, k, v, mask, repeats: int = 5) -> str:
    """Time both kernels' forward on these inputs; a kernel that fails counts as infinitely slow."""
    q, k, v = (x.detach() for x in (q, k, v))
    times = {}
    for name, run in (("sdpa", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
                      ("flex", lambda: flex_attention_masked(q, k, v, mask))):
        try:
            with torch.no_grad():
                run(), run()  # compile and warm up
                torch.cuda.synchronize(q.device) if q.device.type == "cuda" else None
                t0 = time.perf_counter()
                for _ in range(repeats):
                    run()
                torch.cuda.synchronize(q.device) if q.device.type == "cuda" else None
            times[name] = time.perf_counter() - t0
        except Exception:  # e.g. a head dim the compiled kernel does not support: use the other
            times[name] = float("inf")
    return min(times, key=times.get)


def block_mask(mask: torch.Tensor):
    """A dense bool mask [B or 1, 1, Lq, Lk] or [Lq, Lk] -> flex's BlockMask (cached for the last mask seen:
    a model builds each pattern's mask once per forward and every block reuses it)."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = (mask.data_ptr(), tuple(mask.shape), mask._version, mask.device)
    if key not in _block_masks:
        dense = mask[None] if mask.dim() == 2 else mask[:, 0]  # [B or 1, Lq, Lk]
        batched = dense.shape[0] > 1

        def mask_mod(b, h, q_idx, kv_idx):
            return dense[b if batched else 0, q_idx, kv_idx]

        _block_masks.clear()
        _block_masks[key] = create_block_mask(mask_mod, dense.shape[0] if batched else None, None, dense.shape[1],
                                              dense.shape[2], device=mask.device)
    return _block_masks[key]


def flex_attention_masked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """q: [B, H, Lq, Dh], k, v: [B, H, Lk, Dh], mask: bool [B or 1, 1, Lq, Lk] or [Lq, Lk] -> [B, H, Lq, Dh];
    compiled everywhere but on the CPU (where compiling costs more than it saves)."""
    global _compiled
    from torch.nn.attention.flex_attention import flex_attention

    fn = flex_attention
    if q.device.type != "cpu":
        if _compiled is None:
            _compiled = torch.compile(flex_attention, dynamic=False)
        fn = _compiled
    return fn(q, k, v, block_mask=block_mask(mask))
