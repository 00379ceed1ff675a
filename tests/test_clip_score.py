"""CLIPSim-V with a local CLIP (kinema.eval.clip_score; issue 13). kinema ships no CLIP, so the test
builds a tiny random one with its processor and checks kinema's number against transformers' own
calls, frame by frame."""

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from kinema.errors import KinemaError  # noqa: E402
from kinema.eval.clip_score import ClipScorer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("clip")
    words = ["[PAD]", "[UNK]", "[EOS]", "a", "red", "blue", "circle", "square", "moving", "left", "right"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # CLIP pools the text at its first end-of-text token: every prompt ends with one, padding comes after
    backend.post_processor = processors.TemplateProcessing(single="$A [EOS]", special_tokens=[("[EOS]", 2)])
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                            eos_token="[EOS]").save_pretrained(d)
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=2, max_position_embeddings=16, bos_token_id=None,
                                      eos_token_id=2, pad_token_id=0),
                     vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    CLIPModel(cfg).save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
        "do_center_crop": True, "crop_size": {"height": 32, "width": 32}, "do_normalize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_rescale": True, "rescale_factor": 1 / 255, "resample": 3, "do_convert_rgb": True}))
    return d


def reference(path, video, prompt) -> float:
    """transformers' CLIP called directly: each frame's image embedding against the prompt's, the
    cosines averaged (GODIVA's CLIPSIM)."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    def tensor(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    model = CLIPModel.from_pretrained(path).eval()
    extra = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {}
    images, tok = AutoImageProcessor.from_pretrained(path, **extra), AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        t = tensor(model.get_text_features(**tok([prompt], return_tensors="pt")))[0]
        cos = [torch.cosine_similarity(tensor(model.get_image_features(
            pixel_values=images(images=[frame], return_tensors="pt")["pixel_values"]))[0], t, dim=0) for frame in video]
    return float(torch.stack(cos).mean())


def test_clipsim_v_matches_transformers_frame_by_frame(tiny_clip):
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, size=(3, 5, 48, 64, 3), dtype=np.uint8)  # not square: the processor crops
    prompts = ["a red circle moving left", "a blue square", "a red square moving right"]
    scores = ClipScorer(tiny_clip, frame_batch=4)(videos, prompts)  # batches that cut across clips
    assert scores.shape == (3,)
    for video, prompt, got in zip(videos, prompts, scores):
        assert got == pytest.approx(reference(tiny_clip, video, prompt), abs=1e-5)
    # a still clip scores what its one frame scores; each clip is judged against its own prompt
    still = np.repeat(videos[:1, :1], 5, axis=1)
    assert ClipScorer(tiny_clip)(still, prompts[:1])[0] == pytest.approx(ClipScorer(tiny_clip)(videos[:1, :1], prompts[:1])[0], abs=1e-6)
    swapped = ClipScorer(tiny_clip)(videos[:2], prompts[1::-1])
    assert not np.allclose(swapped, scores[:2])


def test_bad_input_gets_one_line(tiny_clip, tmp_path, capsys):
    from kinema.cli import main

    with pytest.raises(KinemaError, match="no CLIP at"):
        ClipScorer(tmp_path)
    # the suite loads its scorers before it generates anything
    assert main(["eval", "suite", "shapes", "--model", "world", "--clip", str(tmp_path)]) == 2
    assert "no CLIP at" in capsys.readouterr().err
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(KinemaError, match="is not a CLIP model"):
        ClipScorer(tmp_path)
    with pytest.raises(KinemaError, match="one prompt per clip"):
        ClipScorer(tiny_clip)(np.zeros((2, 3, 32, 32, 3), np.uint8), ["a red circle"])


def test_the_shapes_suite_scores_each_clip_against_its_own_prompt(tiny_clip, tmp_path, monkeypatch):
    from kinema.cli import main
    from kinema.data import shapes as world
    from kinema.eval.report import world_seed

    every = world.combos
    monkeypatch.setattr(world, "combos", lambda held_out=None: every(held_out)[::9])  # 18 prompts, held-out ones among them
    out = tmp_path / "s.json"
    assert main(["eval", "suite", "shapes", "--model", "world", "--encoder", "none", "--clip", str(tiny_clip),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    row = result["rows"][3]
    combo = next(c for c in every() if _caption(c) == row["prompt"])
    video = world.sample_clip(world_seed(10_000, combo, row["seed"]), combo, frames=17, size=64)[0]  # that row's clip
    assert row["clipsim_v"] == pytest.approx(reference(tiny_clip, video, row["prompt"]), abs=1e-5)
    assert "clipsim_v" in result["summary"] and result["settings"]["clip"] == str(tiny_clip)


def _caption(combo):
    from kinema.data.captions import canonical_caption

    return canonical_caption(*combo)
