from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from r3.models.tokenizer import SPECIAL_TOKENS, build_tokenizer, encode_words
from r3.world.prompts import vocabulary


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
    assert len(vocab) == 82
    assert [vocab[w] for w in ("a", "circle", "circles", "red", ",", "and", "left", "yes", "no")] == [
        41, 14, 18, 22, 43, 42, 46, 81, 65]
