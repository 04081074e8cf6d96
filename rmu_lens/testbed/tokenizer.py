"""A word-level tokenizer built from the testbed's own text, offline, with exact round trips.

Words are GPT-2 style pre-tokens (the leading space belongs to the word: ``" goats"`` is one
token), so ``decode(encode(text)) == text`` for any text made of known words, and the cloze
continuation ``" goats"`` after ``"Answer:"`` is exactly one token. EOS doubles as the pad token;
no BOS is added (like SmolLM2's tokenizer), so a prompt's tokens are the text's own.
"""

from __future__ import annotations

from collections.abc import Iterable

BOS, EOS, UNK = "<|bos|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS = (BOS, EOS, UNK)


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def word_vocabulary(texts: Iterable[str]) -> list[str]:
    """The sorted set of pre-tokens (words with their leading space, punctuation, newlines) in ``texts``."""
    pre_tokenizer = _pre_tokenizer()
    words: set[str] = set()
    for text in texts:
        words.update(piece for piece, _ in pre_tokenizer.pre_tokenize_str(text))
    return sorted(words)


def build_tokenizer(texts: Iterable[str], model_max_length: int = 256):
    """A ``PreTrainedTokenizerFast`` whose vocabulary is every word of ``texts`` plus BOS/EOS/UNK.

    Unknown words map to UNK (and do not round-trip): build from every text the model will read,
    evaluation prompts and choices included.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocabulary = list(SPECIAL_TOKENS) + [w for w in word_vocabulary(texts) if w not in SPECIAL_TOKENS]
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocabulary)}, unk_token=UNK))
    core.pre_tokenizer = _pre_tokenizer()
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=UNK,
        model_max_length=model_max_length,
    )
