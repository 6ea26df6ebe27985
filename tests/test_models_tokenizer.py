from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from r3.models.registry import load_init
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import SPECIAL_TOKENS, build_tokenizer, encode_words
from r3.world.vocabulary import vocabulary

MODEL = TinyConfig(patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64, head_width=32, head_layers=1, head_heads=2)


def test_vocabulary_is_specials_then_words_then_yes_no() -> None:
    tokenizer = build_tokenizer(["red", "Circle", "red", ","])
    vocab = tokenizer.get_vocab()
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert sorted(vocab, key=vocab.get)[len(SPECIAL_TOKENS) :] == ["red", "circle", ",", "yes", "no"]


def test_encode_decode_and_save_load_round_trip(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(["a", "red", "circle", ","])
    ids = encode_words(tokenizer, ["A red circle, a circle"])[0]
    assert tokenizer.decode(ids) == "a red circle , a circle"
    tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert encode_words(loaded, ["a red circle , a circle"])[0] == ids


def test_unknown_words_become_unk_and_bad_entries_raise() -> None:
    tokenizer = build_tokenizer(["a", "circle", "three", "circles"])
    unk, vocab = tokenizer.unk_token_id, tokenizer.get_vocab()
    assert encode_words(tokenizer, ["A green circle"])[0] == [vocab["a"], unk, vocab["circle"]]
    assert encode_words(tokenizer, ["A photo of 3 circles."])[0] == [vocab["a"], unk, unk, unk, vocab["circles"], unk]
    with pytest.raises(ValueError, match="one non-empty word"):
        build_tokenizer(["red circle"])


def test_shapeworld_vocabulary_ids_are_unchanged() -> None:
    """Checkpoints being trained rely on these ids: the vocabulary must only ever grow at its end."""
    vocab = build_tokenizer(vocabulary()).get_vocab()
    assert len(vocab) == 86
    assert [vocab[w] for w in ("a", "circle", "circles", "red", ",", "and", "left", "yes", "no")] == [
        41, 14, 18, 22, 43, 42, 46, 81, 65]
    assert [vocab[w] for w in ("photo", "on", "larger", "smaller")] == [82, 83, 84, 85]  # GenEval++'s words, last


def test_a_checkpoint_from_before_the_geneval_pp_words_grows_its_vocabulary(tmp_path: Path) -> None:
    """models/base predates "photo", "on", "larger", "smaller": training from it extends the vocabulary at its end,
    keeping every known id and weight, so that larger / smaller are not both `<unk>`."""
    torch.manual_seed(0)
    old = TinyUnifiedModel(MODEL, build_tokenizer(vocabulary()[:-4]))
    old.save_pretrained(tmp_path / "base")
    grown = load_init(tmp_path / "base", expected=MODEL)
    assert grown.tokenizer.get_vocab() == build_tokenizer(vocabulary()).get_vocab()
    before, after = old.state_dict(), grown.state_dict()
    rows = ("lm.model.embed_tokens.weight", "lm.lm_head.weight")  # (V, D): the known words' rows come first
    for name, weight in before.items():
        assert torch.equal(after[name][: len(weight)] if name in rows else after[name], weight), name
    assert after["lm.model.embed_tokens.weight"].shape == (86, MODEL.lm_dim)
    larger, smaller = encode_words(grown.tokenizer, ["larger smaller"])[0]
    assert grown.tokenizer.unk_token_id not in (larger, smaller) and larger != smaller
    assert grown.with_vocabulary(vocabulary()) is grown  # nothing left to add
    with pytest.raises(ValueError, match="does not extend the model's at its end"):
        grown.with_vocabulary(list(reversed(vocabulary())))
