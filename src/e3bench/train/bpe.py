"""A byte-level BPE tokenizer trained locally with `tokenizers` (no download): used by the tiny
test fixtures and by the from-scratch training suite."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def train_byte_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str]):
    """Return a trained ``tokenizers.Tokenizer`` (byte-level pre-tokenizer and decoder)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok
