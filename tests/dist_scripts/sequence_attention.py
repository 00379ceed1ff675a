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
Path(sys.argv[1], f"rank_{r}.txt").write_text("\n".join(lines) + "\n")
dist.destroy_process_group()
