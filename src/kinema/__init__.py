"""kinema: text-to-video and image-to-video in plain PyTorch.

    import kinema
    pipe = kinema.load_pipeline("shapes")
    frames = pipe("a red circle moving right", num_frames=17, steps=25, guidance=5.0, seed=0)  # uint8 [T, H, W, 3]
"""

__version__ = "0.1.0"


def load_pipeline(name_or_path="shapes", device: str = "auto", precision: str = "auto", compile: bool = False):
    """Load a shipped model by name or a model directory written by `kinema train` (see kinema.pipelines).

    device: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps"; precision: "auto"
    (bf16 where the hardware runs it fast, else fp32; see kinema.runtime), "bf16", "fp16" or "fp32"."""
    from kinema.pipelines.pipeline import load_pipeline as _load

    return _load(name_or_path, device=device, precision=precision, compile=compile)
