from pathlib import Path

import pytest
from transformers import PreTrainedTokenizerFast

from r3.models.tokenizer import SPECIAL_TOKENS, build_tokenizer, encode_words


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


def test_unknown_words_and_bad_entries_raise() -> None:
    tokenizer = build_tokenizer(["a", "circle"])
    with pytest.raises(ValueError, match=r"words \['green'\] of 'a green circle'"):
        encode_words(tokenizer, ["a green circle"])
    with pytest.raises(ValueError, match="one non-empty word"):
        build_tokenizer(["red circle"])
