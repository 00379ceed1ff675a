"""Run by tests/test_dist.py under torchrun: sequence-parallel attention on this process's tokens
equals single-process attention over the whole sequence. Writes one line per case to
OUT_DIR/rank_R.txt (sys.argv[1])."""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from kinema.nn.attention import attention, key_padding_mask
from kinema.nn.sequence_parallel import gathered_attention, sequence_attention, ulysses_attention

dist.init_process_group("gloo")
p, r = dist.get_world_size(), dist.get_rank()
lines = []
g = torch.Generator().manual_seed(0)  # the same whole tensors on every process
for heads, masked in ((4, None), (4, "padding"), (2, "full"), (3, "full")):
    b, length, d = 2, 12, 8
    q, k, v = (torch.randn(b, heads, length, d, generator=g) for _ in range(3))
    mask = None
    if masked == "padding":
        mask = key_padding_mask(torch.arange(length)[None] < torch.tensor([[9], [12]]))
    elif masked == "full":
        mask = torch.rand(b, 1, length, length, generator=g) > 0.3
        mask[..., 0] = True
    whole = attention(q, k, v, mask)  # [B, L, H Dh]
    n = length // p
    local = [x[:, :, r * n:(r + 1) * n] for x in (q, k, v)]
    out = sequence_attention(*local, mask)
    err = (out - whole[:, r * n:(r + 1) * n]).abs().max().item()
    other = (gathered_attention(*local, mask) - whole[:, r * n:(r + 1) * n]).abs().max().item()
    lines.append(f"heads {heads} mask {masked}: {err:.2e} {other:.2e}")
try:
    ulysses_attention(*(torch.zeros(1, 3, 2, 4) for _ in range(3)))
except ValueError as e:
    lines.append(f"error: {e}")
# the whole denoiser under a sequence-parallel scope: the same output and input gradient as one process,
# with each process's self-attention seeing half the tokens
from conftest import random_text, randomize_  # noqa: E402

from kinema.config import DIT_PRESETS  # noqa: E402
from kinema.dit.transformer import MMDiT  # noqa: E402
from kinema.nn import sequence_parallel as sp  # noqa: E402

model = randomize_(MMDiT(DIT_PRESETS["wan-tiny"]), std=0.1)
x = torch.randn(2, 4, 3, 4, 4, generator=g)
t, cond = torch.rand(2, generator=g), random_text(2, tokens=5, dim=384)
whole = model(x, t, cond)
seen = []
real = sp.sequence_attention
sp.sequence_attention = lambda q, *a: seen.append(q.shape[2]) or real(q, *a)
with sp.scope():
    split = model(x, t, cond)
lines.append(f"model: {(split - whole).abs().max().item():.2e} {0.0:.2e} tokens seen {sorted(set(seen))}")
# MM-DiT: joint [text; video] attention with the text whole on every process (dual, single and
# CogVideoX's shared-stream blocks, AsymmDiT, a temporal mask, 3 heads on the gathered fallback),
# Wan with 3 heads (self-attention's gathered fallback), and the factorized spatial / temporal layouts
# (Latte, Open-Sora-Plan; Open-Sora with 3 heads): the output and the gradients of every weight,
# summed over the processes as DDP does, equal one process's
import dataclasses  # noqa: E402
import warnings  # noqa: E402

hunyuan3 = dataclasses.replace(DIT_PRESETS["hunyuan-tiny"], dim=48, heads=3)
for name, cfg in (("hunyuan", DIT_PRESETS["hunyuan-tiny"]), ("cogvideox", DIT_PRESETS["cogvideox-tiny"]),
                  ("mochi", DIT_PRESETS["mochi-tiny"]), ("easyanimate", DIT_PRESETS["easyanimate-tiny"]),
                  ("hunyuan-3-heads", hunyuan3), ("wan-3-heads", dataclasses.replace(DIT_PRESETS["wan-tiny"], dim=48, heads=3)),
                  ("latte", DIT_PRESETS["latte-tiny"]), ("opensora-plan", DIT_PRESETS["opensora-plan-tiny"]),
                  ("opensora-3-heads", dataclasses.replace(DIT_PRESETS["opensora-tiny"], dim=48, heads=3))):
    model = randomize_(MMDiT(cfg), std=0.1)
    whole = model(x, t, cond)
    whole.pow(2).sum().backward()
    ref = {n: w.grad.clone() for n, w in model.named_parameters()}
    model.zero_grad()
    with sp.scope(), warnings.catch_warnings(record=True):
        split = model(x, t, cond)
    split.pow(2).sum().backward()
    grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in model.parameters()]
    for gr in grads:
        dist.all_reduce(gr)
    grad_err = max(((gr / p - ref[n]).abs().max() / (ref[n].abs().max() + 1e-6)).item()
                   for (n, _), gr in zip(model.named_parameters(), grads))
    lines.append(f"grads {name}: {(split - whole).abs().max().item():.2e} {grad_err:.2e}")
# packed rows (clips of three shapes, rows padded to split in two) under the same split
from test_packing import _samples  # noqa: E402

for name in ("hunyuan-tiny", "latte-tiny", "wan-tiny"):
    model = randomize_(MMDiT(DIT_PRESETS[name]), std=0.1)
    xs, pcond = _samples(model.cfg)
    pt = torch.tensor([0.2, 0.5, 0.9, 0.7])
    whole = model(xs, pt, pcond, budget=20)
    sum(o.pow(2).sum() for o in whole).backward()
    ref = {n: w.grad.clone() for n, w in model.named_parameters()}
    model.zero_grad()
    with sp.scope():
        split = model(xs, pt, pcond, budget=20)
    sum(o.pow(2).sum() for o in split).backward()
    grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in model.parameters()]
    for gr in grads:
        dist.all_reduce(gr)
    grad_err = max(((gr / p - ref[n]).abs().max() / (ref[n].abs().max() + 1e-6)).item()
                   for (n, _), gr in zip(model.named_parameters(), grads))
    out_err = max((a - b).abs().max().item() for a, b in zip(split, whole))
    lines.append(f"grads packed {name}: {out_err:.2e} {grad_err:.2e}")
Path(sys.argv[1], f"rank_{r}.txt").write_text("\n".join(lines) + "\n")
dist.barrier()  # no process tears the group down while another still uses it (gloo aborts then)
dist.destroy_process_group()
