"""The Kinetics-400 I3D loader for FVD (kinema.eval.i3d; issue 13). kinema ships no I3D weights, so
these tests build random ones in each file layout the loader reads."""

import numpy as np
import pytest
import torch

from kinema.errors import KinemaError
from kinema.eval.distances import distances
from kinema.eval.features import extract
from kinema.eval.i3d import I3D, MIXED, load_i3d, same_padding


@pytest.mark.parametrize("n, k, s, want", [
    (224, 7, 2, (2, 3)),   # TF: out 112, total (112 - 1) * 2 + 7 - 224 = 5, the odd one at the end
    (15, 7, 2, (3, 3)),    # out 8: (8 - 1) * 2 + 7 - 15 = 6
    (7, 3, 2, (1, 1)),     # out 4: 3 * 2 + 3 - 7 = 2
    (8, 2, 2, (0, 0)),     # the 2x2x2 pool: exact
    (9, 3, 1, (1, 1)),     # stride 1: k - 1
])
def test_same_padding_is_tensorflows(n, k, s, want):
    assert same_padding((n,), (k,), (s,)) == want
    assert same_padding((4, n), (1, k), (1, s)) == (*want, 0, 0)  # F.pad's order: the last axis first


def random_i3d(seed=0) -> I3D:
    torch.manual_seed(seed)
    model = I3D().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):  # trained-looking statistics, no scale (DeepMind's have none)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.1, 0.1)
    return model


def to_tensorflow(model: I3D) -> dict[str, np.ndarray]:
    """The model's weights under DeepMind's variable names and layouts, written out by hand."""
    out, root = {}, "RGB/inception_i3d"
    branch = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
              "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3b": "Branch_3/Conv3d_0b_1x1"}
    for key, v in model.state_dict().items():
        parts = key.split(".")
        if parts[-1] == "num_batches_tracked" or (parts[-2] == "bn" and parts[-1] == "weight"):
            continue
        if parts[0] == "logits":
            scope = f"{root}/Logits/Conv3d_0c_1x1"
        elif parts[0] in MIXED:
            scope = f"{root}/{parts[0]}/{branch[parts[1]]}"
        else:
            scope = f"{root}/{parts[0]}"
        v = v.numpy()
        name = {"conv3d.weight": "conv_3d/w", "conv3d.bias": "conv_3d/b", "bn.bias": "batch_norm/beta",
                "bn.running_mean": "batch_norm/moving_mean", "bn.running_var": "batch_norm/moving_variance"}[".".join(parts[-2:])]
        if name == "conv_3d/w":
            v = v.transpose(2, 3, 4, 1, 0)  # [out, in, t, h, w] -> [t, h, w, in, out]
        elif name.startswith("batch_norm"):
            v = v.reshape(1, 1, 1, 1, -1)   # sonnet keeps them broadcastable
        out[f"{scope}/{name}"] = v
    return out


def test_the_architecture_at_the_reference_input():
    """16 x 224 x 224 in -> 1024 x 2 x 7 x 7 after Mixed_5c -> 400 logits; about 12.5 M parameters
    (Carreira & Zisserman's Table 1: 25 M for the two-stream I3D, RGB and flow)."""
    model = random_i3d()
    x = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    seen = {}
    model.Mixed_5c.register_forward_hook(lambda m, i, o: seen.update({"5c": o.shape}))
    model.Conv3d_1a_7x7.register_forward_hook(lambda m, i, o: seen.update({"1a": o.shape}))
    with torch.no_grad():
        assert model(x).shape == (1, 400)
    assert seen == {"1a": (1, 64, 8, 112, 112), "5c": (1, 1024, 2, 7, 7)}
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(12.5e6, rel=0.03)  # 12 697 264


def test_every_layout_loads_to_the_same_network(tmp_path):
    """A PyTorch state dict (.pt, with DataParallel's prefix; .safetensors) and DeepMind's
    TensorFlow variables (.npz) give the network that wrote them, output for output."""
    from safetensors.torch import save_file

    model = random_i3d()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.weight.data.fill_(1.0)  # DeepMind's BatchNorms have no scale
    state = model.state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "rgb.pt")
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "rgb.safetensors")
    np.savez(tmp_path / "rgb.npz", **to_tensorflow(model))
    x = torch.rand(1, 3, 9, 224, 224) * 2 - 1  # 9 frames: time 9 -> 5 -> 3 -> 2 positions, enough to pool
    with torch.no_grad():
        want = model(x)
        for name in ("rgb.pt", "rgb.safetensors", "rgb.npz"):
            got = load_i3d(tmp_path / name).model(x)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_the_extractor_is_fvds(tmp_path):
    model = random_i3d()
    torch.save(model.state_dict(), tmp_path / "i3d.pt")
    features = load_i3d(tmp_path / "i3d.pt")
    spec = features.spec
    assert (spec.name, spec.frames, spec.size, spec.value_range, spec.dim) == ("i3d-kinetics400", 16, 224, (-1.0, 1.0), 400)
    videos = np.random.default_rng(0).integers(0, 256, size=(2, 17, 32, 32, 3), dtype=np.uint8)
    stats = extract(features, videos)
    assert stats.features.shape == (2, 400) and set(distances(stats, stats)) == {"FVD", "KVD", "JEDi-form"}
    # batches do not change the features (BatchNorm runs on its statistics)
    np.testing.assert_allclose(features(videos[:1])[0], stats.features[0], rtol=1e-4, atol=1e-5)


def test_bad_files_get_one_clear_line(tmp_path):
    with pytest.raises(KinemaError, match="kinema ships none"):
        load_i3d(tmp_path / "nothing.pt")
    (tmp_path / "i3d.ckpt").write_bytes(b"x")
    with pytest.raises(KinemaError, match=r"give the I3D weights as \.pt"):
        load_i3d(tmp_path / "i3d.ckpt")
    state = I3D().state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("Mixed_5c")}, tmp_path / "cut.pt")
    with pytest.raises(KinemaError, match=r"missing: Mixed_5c\..* \(\d+\)"):
        load_i3d(tmp_path / "cut.pt")
    np.savez(tmp_path / "other.npz", w=np.zeros(3))
    with pytest.raises(KinemaError, match="not DeepMind's I3D"):
        load_i3d(tmp_path / "other.npz")


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_eval_distances_between_two_folders(tmp_path, capsys):
    """`kinema eval distances REAL GENERATED`: the shipped encoder by default (FD-<name>), FVD with
    --i3d; videos of any length and size; a set of one is refused."""
    import json

    from kinema.cli import main
    from kinema.data import shapes
    from kinema.io.video import write_gif

    for folder, offset in (("real", 0), ("fake", 100)):
        (tmp_path / folder).mkdir()
        for i in range(4):
            video, _ = shapes.sample_clip(offset + i, frames=9 + 4 * (i % 2), size=64)
            write_gif(video, tmp_path / folder / f"{i}.gif")
    torch.save(random_i3d().state_dict(), tmp_path / "i3d.pt")
    out = tmp_path / "d.json"
    assert main(["eval", "distances", str(tmp_path / "real"), str(tmp_path / "fake"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["generated"]["clips"] == 4 and "FD-kinema-shapes-video-encoder" in result["distances"]
    assert main(["eval", "distances", str(tmp_path / "real"), str(tmp_path / "fake"), "--i3d", str(tmp_path / "i3d.pt"),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["extractor"]["name"] == "i3d-kinetics400" and result["distances"]["FVD"] > 0
    out_text = capsys.readouterr().out
    assert "FVD" in out_text and "mostly sampling noise" in out_text  # 4 clips for 400 features
    assert main(["eval", "distances", str(tmp_path / "real"), str(tmp_path / "nothing")]) == 2
    assert "no file or folder at" in capsys.readouterr().err
    assert main(["eval", "distances", str(tmp_path / "real"), str(tmp_path / "fake"), "--i3d", "a.pt", "--encoder", "b"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["eval", "distances", str(tmp_path / "real"), str(tmp_path / "fake" / "0.gif")]) == 2
    assert "at least 2 videos" in capsys.readouterr().err
