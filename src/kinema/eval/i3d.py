"""The Kinetics-400 I3D (Carreira & Zisserman 2017, Inception-v1 inflated to 3D), the network FVD
is defined with, loaded from a file the user has. kinema ships no I3D weights and downloads none.

    features = load_i3d("rgb_imagenet.pt")      # a VideoFeatureExtractor named "i3d-kinetics400"
    distances(extract(features, fake), extract(features, real))["FVD"]

The reference preprocessing (Unterthiner et al. 2018, and StyleGAN-V's port): 16 frames, each
resized bilinearly to 224 x 224, values in [-1, 1]. The features are the 400 logits averaged over
time, before the softmax.

Files it reads:
- a PyTorch state dict (`.pt` / `.pth`, or `.safetensors`) in the layout of the common PyTorch port
  (module names as in DeepMind's code: `Conv3d_1a_7x7.conv3d.weight`, `Mixed_3b.b1b.bn.running_mean`,
  `logits.conv3d.bias`); this is also kinema's own layout, so it loads as it is
- DeepMind's TensorFlow variables exported to `.npz` (`RGB/inception_i3d/Mixed_3b/Branch_1/
  Conv3d_0b_3x3/conv_3d/w` ...): `from_tensorflow` maps the names, moves the kernels from
  [t, h, w, in, out] to [out, in, t, h, w], and gives the BatchNorms their scale of 1 (DeepMind's
  have none)

Every convolution and pooling pads like TensorFlow's "SAME" (asymmetric, more at the end), which
is what the weights were trained with.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kinema.errors import KinemaError
from kinema.eval.features import FeatureSpec, fit_clip, sha256_of

NAME = "i3d-kinetics400"
FRAMES, SIZE, CLASSES = 16, 224, 400

# each Inception block's widths: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | pool -> 1x1
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# (name, kind, kernel, stride) in order; a conv's output width follows its name, a Mixed its table
BODY = [
    ("Conv3d_1a_7x7", "conv", (7, 7, 7), (2, 2, 2)), ("MaxPool3d_2a_3x3", "pool", (1, 3, 3), (1, 2, 2)),
    ("Conv3d_2b_1x1", "conv", (1, 1, 1), (1, 1, 1)), ("Conv3d_2c_3x3", "conv", (3, 3, 3), (1, 1, 1)),
    ("MaxPool3d_3a_3x3", "pool", (1, 3, 3), (1, 2, 2)), ("Mixed_3b", "mixed", None, None),
    ("Mixed_3c", "mixed", None, None), ("MaxPool3d_4a_3x3", "pool", (3, 3, 3), (2, 2, 2)),
    *[(f"Mixed_4{c}", "mixed", None, None) for c in "bcdef"],
    ("MaxPool3d_5a_2x2", "pool", (2, 2, 2), (2, 2, 2)), ("Mixed_5b", "mixed", None, None),
    ("Mixed_5c", "mixed", None, None),
]
CONV_WIDTH = {"Conv3d_1a_7x7": 64, "Conv3d_2b_1x1": 64, "Conv3d_2c_3x3": 192}


def same_padding(size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """TensorFlow's "SAME" padding of a [.., T, H, W] input, in F.pad's order (W first): the output
    has ceil(n / stride) positions, the odd pixel of padding goes at the end."""
    pad = []
    for n, k, s in reversed(list(zip(size, kernel, stride))):
        total = max(k - (n % s or s), 0)
        pad += [total // 2, total - total // 2]
    return tuple(pad)


class Unit(nn.Module):
    """Conv3d with SAME padding, then (optionally) BatchNorm (eps 1e-3, as trained) and ReLU."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), norm: bool = True, relu: bool = True):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, bias=not norm)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class MaxPoolSame(nn.Module):
    """Max pooling with SAME padding. Its inputs follow a ReLU (>= 0), so zero padding never wins a
    max over real values: it equals TensorFlow's padding, which ignores the padded positions."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(F.pad(x, same_padding(x.shape[2:], self.kernel, self.stride)), self.kernel, self.stride)


class Mixed(nn.Module):
    """An Inception block over four branches, concatenated on channels."""

    def __init__(self, cin: int, w: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit(cin, w[0])
        self.b1a, self.b1b = Unit(cin, w[1]), Unit(w[1], w[2], (3, 3, 3))
        self.b2a, self.b2b = Unit(cin, w[3]), Unit(w[3], w[4], (3, 3, 3))
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit(cin, w[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


class I3D(nn.Module):
    """[B, 3, T, 224, 224] in [-1, 1] -> logits [B, 400], averaged over the time positions left."""

    def __init__(self, classes: int = CLASSES):
        super().__init__()
        width = 3
        for name, kind, kernel, stride in BODY:
            if kind == "conv":
                self.add_module(name, Unit(width, CONV_WIDTH[name], kernel, stride))
                width = CONV_WIDTH[name]
            elif kind == "pool":
                self.add_module(name, MaxPoolSame(kernel, stride))
            else:
                self.add_module(name, Mixed(width, MIXED[name]))
                w = MIXED[name]
                width = w[0] + w[2] + w[4] + w[5]
        self.logits = Unit(width, classes, norm=False, relu=False)  # 1024 -> 400, with a bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, *_ in BODY:
            x = self._modules[name](x)
        x = F.avg_pool3d(x, (2, 7, 7), stride=1)  # [B, 1024, T', 1, 1] at 16 x 224 x 224: T' = 1
        return self.logits(x).flatten(2).mean(dim=2)


def from_tensorflow(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """DeepMind's variable names and layouts -> an I3D state dict."""
    def unit(tf: str, ours: str, norm: bool = True) -> None:
        w = arrays[f"{tf}/conv_3d/w"]
        out[f"{ours}.conv3d.weight"] = torch.from_numpy(np.ascontiguousarray(np.transpose(w, (4, 3, 0, 1, 2))))
        if norm:
            beta = arrays[f"{tf}/batch_norm/beta"].reshape(-1)
            out[f"{ours}.bn.weight"] = torch.ones(beta.shape)
            out[f"{ours}.bn.bias"] = torch.from_numpy(beta)
            out[f"{ours}.bn.running_mean"] = torch.from_numpy(arrays[f"{tf}/batch_norm/moving_mean"].reshape(-1))
            out[f"{ours}.bn.running_var"] = torch.from_numpy(arrays[f"{tf}/batch_norm/moving_variance"].reshape(-1))
        else:
            out[f"{ours}.conv3d.bias"] = torch.from_numpy(arrays[f"{tf}/conv_3d/b"].reshape(-1))

    root = next((k.split("inception_i3d")[0] + "inception_i3d" for k in arrays if "inception_i3d" in k), "inception_i3d")
    out: dict[str, torch.Tensor] = {}
    branches = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
                "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
    for name, kind, *_ in BODY:
        if kind == "conv":
            unit(f"{root}/{name}", name)
        elif kind == "mixed":
            for ours, tf in branches.items():
                unit(f"{root}/{name}/{tf}", f"{name}.{ours}")
    unit(f"{root}/Logits/Conv3d_0c_1x1", "logits", norm=False)
    return {k: v.float() for k, v in out.items()}


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .pt / .pth / .safetensors (PyTorch layout) or .npz (TensorFlow names)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        with np.load(path) as z:
            return from_tensorflow({k: z[k] for k in z.files})
    if suffix == ".safetensors":
        from kinema.io.weights import load_weights

        return load_weights(path)
    if suffix in (".pt", ".pth"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise KinemaError(f"{path} holds a {type(state).__name__}, not an I3D state dict")
        return {k.removeprefix("module."): v for k, v in state.items()}
    raise KinemaError(f"{path}: give the I3D weights as .pt, .pth, .safetensors (PyTorch layout) or .npz "
                      "(DeepMind's TensorFlow variable names)")


class I3DExtractor:
    """The Kinetics-400 I3D as a VideoFeatureExtractor: FVD's features."""

    def __init__(self, model: I3D, weights_hash: str, batch_size: int = 4):
        self.model, self.batch_size = model.eval(), batch_size
        self.spec = FeatureSpec(NAME, weights_hash, FRAMES, SIZE, (-1.0, 1.0), model.logits.conv3d.out_channels)

    @torch.no_grad()
    def __call__(self, videos: np.ndarray) -> np.ndarray:
        parts = [self.model(fit_clip(videos[i:i + self.batch_size], self.spec)).double().numpy()
                 for i in range(0, len(videos), self.batch_size)]
        return np.concatenate(parts)


def load_i3d(path: str | Path) -> I3DExtractor:
    """The I3D in `path` (see the module docstring for the layouts), checked key by key."""
    path = Path(path)
    if not path.is_file():
        raise KinemaError(f"no I3D weights at {path}; kinema ships none: give the path of a Kinetics-400 I3D file "
                          "you have (e.g. the PyTorch port's rgb_imagenet.pt)")
    try:
        state = read_state(path)
    except KeyError as e:
        raise KinemaError(f"{path} is not DeepMind's I3D: it has no variable {e.args[0]!r}") from None
    model = I3D()
    want = model.state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(want) - set(state) - {k for k in want if k.endswith("num_batches_tracked")})
    unexpected = sorted(set(state) - set(want))
    wrong = sorted(k for k in set(state) & set(want) if state[k].shape != want[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise KinemaError(f"{path} is not a Kinetics-400 I3D in a layout kinema reads; " + "; ".join(parts))
    model.load_state_dict(state, strict=False)
    return I3DExtractor(model, sha256_of(path))
