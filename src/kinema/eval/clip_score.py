"""CLIPSim-V (Wu et al. 2021, GODIVA; as NÜWA and Make-A-Video report it): the cosine between a
prompt's CLIP text embedding and each frame's CLIP image embedding, averaged over the frames.
kinema ships no CLIP: give a local transformers CLIP directory (a model and its processor, e.g.
`openai/clip-vit-base-patch32` saved with `save_pretrained`). Nothing is downloaded.

    scorer = ClipScorer("path/to/clip")
    scorer(videos, prompts)   # uint8 [B, T, H, W, 3], B prompts -> [B] cosines in [-1, 1]

Published CLIPSIM figures are this cosine (about 0.3 for a good text-to-video model with
ViT-B/32); some papers multiply by 100. Frames are preprocessed by the CLIP's own processor
(its resize, centre crop and normalisation), so the number depends on which CLIP is used: the
result records its directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kinema.errors import KinemaError
from kinema.eval.features import check_videos


class ClipScorer:
    def __init__(self, path: str | Path, device: str = "cpu", frame_batch: int = 64):
        path = Path(path)
        if not (path / "config.json").is_file():
            raise KinemaError(f"no CLIP at {path}: give a local transformers CLIP directory (config.json, weights and "
                              "processor files, e.g. from CLIPModel.save_pretrained); kinema downloads none")
        try:
            import transformers
            from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel
        except ImportError:
            raise KinemaError("CLIPSim-V needs transformers: pip install 'kinema[dev]' or transformers") from None
        extra = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {}  # no torchvision needed
        try:
            self.model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
            self.images = AutoImageProcessor.from_pretrained(path, local_files_only=True, **extra)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise KinemaError(f"{path} is not a CLIP model with its processor ({str(e).splitlines()[0]})") from None
        self.path, self.device, self.frame_batch = str(path), device, frame_batch

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        """get_*_features give a tensor in transformers 4 and an output object in 5."""
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def text(self, prompts: list[str]) -> torch.Tensor:
        t = self.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        return torch.nn.functional.normalize(self._tensor(self.model.get_text_features(**t)).float(), dim=-1)

    @torch.no_grad()
    def frames(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> unit image embeddings [N, D]."""
        out = []
        for i in range(0, len(frames), self.frame_batch):
            pixels = self.images(images=list(frames[i:i + self.frame_batch]), return_tensors="pt")["pixel_values"]
            out.append(self._tensor(self.model.get_image_features(pixel_values=pixels.to(self.device))).float())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def __call__(self, videos: np.ndarray, prompts: list[str]) -> np.ndarray:
        videos = check_videos(videos)
        if len(prompts) != len(videos):
            raise KinemaError(f"CLIPSim-V needs one prompt per clip; got {len(prompts)} for {len(videos)} clips")
        b, t = videos.shape[:2]
        image = self.frames(videos.reshape(b * t, *videos.shape[2:])).reshape(b, t, -1)
        return (image * self.text(prompts)[:, None]).sum(-1).mean(1).double().cpu().numpy()
