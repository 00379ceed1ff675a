"""Frozen text encoders behind one interface: prompts -> TextStates(tokens, mask, pooled).

"minilm" is the offline default (all-MiniLM-L6-v2 from PyPI). Any other `encoder` value is a
local directory holding a transformers encoder (T5, CLIP text, UMT5, BERT, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kinema.config import TextConfig
from kinema.errors import KinemaError
from kinema.runtime import no_autocast


@dataclass
class TextStates:
    tokens: torch.Tensor  # [B, L, D] token states (padding positions zeroed)
    mask: torch.Tensor  # [B, L] bool, True on real tokens
    pooled: torch.Tensor  # [B, D] mean over real tokens (CLIP: its pooled output)

    def index(self, idx) -> "TextStates":
        return TextStates(self.tokens[idx], self.mask[idx], self.pooled[idx])

    def to(self, device) -> "TextStates":
        return TextStates(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


def _finish(tokens: torch.Tensor, mask: torch.Tensor) -> TextStates:
    mask = mask.bool()
    tokens = tokens.float() * mask[..., None]
    pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return TextStates(tokens, mask, pooled)


class MiniLMEncoder:
    """Runs in fp32 on the device it was moved to (`.to(device)`); states come back on that device."""

    def __init__(self, max_tokens: int):
        from tokenizers import Tokenizer

        from kinema.text.minilm import MiniLM

        self.model, root = MiniLM.from_package()
        self.dim = self.model.dim
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_tokens)
        self.tokenizer.enable_padding(length=max_tokens, pad_id=0, pad_token="[PAD]")

    def to(self, device: torch.device) -> "MiniLMEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> TextStates:
        enc = self.tokenizer.encode_batch(list(prompts))
        device = self.model.embeddings.word_embeddings.weight.device
        ids = torch.tensor([e.ids for e in enc], device=device)
        mask = torch.tensor([e.attention_mask for e in enc], device=device)
        with no_autocast(device):
            return _finish(self.model(ids, mask), mask)


class TransformersEncoder:
    """Any local transformers text encoder. Encoder-decoder models (T5, UMT5) run their encoder
    stack; CLIP runs its text model, whose pooled output (the end-of-text token's state) is the
    pooled vector; encoder-only models (BERT, ...) run whole, pooled by the masked mean."""

    def __init__(self, path: str, max_tokens: int):
        if not Path(path).is_dir():
            raise KinemaError(f"text encoder {path!r} is neither 'minilm' nor a local model directory")
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

        config = AutoConfig.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.clip = config.model_type in ("clip", "clip_text_model")
        if self.clip:  # CLIPModel would want pixel values too
            model = CLIPTextModel.from_pretrained(path)
        else:
            model = AutoModel.from_pretrained(path)
            if getattr(config, "is_encoder_decoder", False):
                model = model.get_encoder()  # (BERT's get_encoder is its layer stack, which takes no input_ids)
        self.model = model.eval().requires_grad_(False)
        text_config = getattr(self.model.config, "text_config", self.model.config)
        self.dim = getattr(text_config, "hidden_size", None) or text_config.d_model
        self.max_tokens = max_tokens

    def to(self, device: torch.device) -> "TransformersEncoder":
        self.model.to(device)
        return self

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> TextStates:
        b = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_tokens, return_tensors="pt")
        device = self.model.device
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        with no_autocast(device):
            out = self.model(input_ids=ids, attention_mask=mask)
            states = _finish(out.last_hidden_state, mask)
        if self.clip:
            states.pooled = out.pooler_output.float()
        return states


class TwoEncoders:
    """Token states from one encoder, the pooled vector from another (HunyuanVideo and SD3 take
    tokens from an LLM or T5 and the pooled vector from CLIP): `dim` the tokens' width,
    `pooled_dim` the pooled vector's."""

    def __init__(self, tokens, pooled):
        self.tokens, self.pooled = tokens, pooled
        self.dim, self.pooled_dim = tokens.dim, pooled.dim

    def to(self, device: torch.device) -> "TwoEncoders":
        self.tokens.to(device)
        self.pooled.to(device)
        return self

    def __call__(self, prompts: list[str]) -> TextStates:
        states = self.tokens(prompts)
        states.pooled = self.pooled(prompts).pooled
        return states


def _one(encoder: str, max_tokens: int):
    if encoder == "minilm":
        return MiniLMEncoder(max_tokens)
    return TransformersEncoder(encoder, max_tokens)


def load_text_encoder(cfg: TextConfig):
    """cfg.encoder's token states and pooled vector, or with cfg.pooled_encoder the pooled vector from that one."""
    enc = _one(cfg.encoder, cfg.max_tokens)
    if cfg.pooled_encoder:
        return TwoEncoders(enc, _one(cfg.pooled_encoder, cfg.max_tokens))
    return enc


def check_widths(encoder, dit_cfg) -> None:
    """The denoiser reads what the encoder writes: its text_dim is the token width, its pooled_dim
    (or text_dim) the pooled width. One clear line otherwise, before any work."""
    pooled = getattr(encoder, "pooled_dim", encoder.dim)
    if encoder.dim != dit_cfg.text_dim:
        raise KinemaError(f"the text encoder writes {encoder.dim}-wide token states, model.dit.text_dim is "
                          f"{dit_cfg.text_dim}; set model.dit.text_dim: {encoder.dim}")
    if dit_cfg.pooled and dit_cfg.pooling != "attention" and pooled != (dit_cfg.pooled_dim or dit_cfg.text_dim):
        raise KinemaError(f"the text encoder's pooled vector is {pooled} wide, the denoiser reads "
                          f"{dit_cfg.pooled_dim or dit_cfg.text_dim}; set model.dit.pooled_dim: {pooled}")
