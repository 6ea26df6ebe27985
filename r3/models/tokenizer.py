"""Word-level tokenizer of the tiny model: the world's vocabulary plus the special tokens of the sequence layout.

Text is lower-cased and split on whitespace and punctuation; a word outside the vocabulary becomes `<unk>`, so any
text encodes (over the ShapeWorld vocabulary "A picture of 3 circles." -> `a <unk> of <unk> circles <unk>`).
Decoding joins words with single spaces.
"""

from collections.abc import Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, UNK, BOS, EOS, SEP = "<pad>", "<unk>", "<bos>", "<eos>", "<sep>"
IMAGE, PATCH = "<image>", "<patch>"
TASK_TOKENS = {
    "reason": "<reason>",
    "generate": "<generate>",
    "reflect": "<reflect>",
    "edit": "<edit>",
    "answer": "<answer>",
    "judge": "<judge>",
    "caption": "<caption>",
}
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS, SEP, IMAGE, PATCH, *TASK_TOKENS.values()]
YES, NO = "yes", "no"
"""Answers of the `judge` task; always part of the vocabulary."""


def build_tokenizer(words: Sequence[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `words` (+ yes/no) after the special tokens; duplicates are dropped."""
    vocab: dict[str, int] = {}
    for word in [*SPECIAL_TOKENS, *(w.strip().lower() for w in words), YES, NO]:
        if not word or any(c.isspace() for c in word):
            raise ValueError(f"vocabulary entry {word!r} must be one non-empty word without spaces")
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        sep_token=SEP,
        additional_special_tokens=[IMAGE, PATCH, *TASK_TOKENS.values()],
    )


def encode_words(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text (no special tokens); words outside the vocabulary are the `<unk>` id."""
    return tokenizer(list(texts), add_special_tokens=False)["input_ids"]
