"""A run's caption tokenizer as Hugging Face tokenizer files (``tokenizer.json`` + ``tokenizer_config.json``),
the form open_clip's ``HFTokenizer`` and transformers' ``AutoTokenizer`` read.

The closed word vocabulary becomes a ``tokenizers`` WordLevel model with the same steps as
``vlmforge.data.tokenizers.WordVocab``: lower-case, split on whitespace, then runs of ``[a-z0-9]`` and
single other characters as words; ``<start>`` ... ``<end>`` around every caption, ``<pad>`` (id 0) after.
Truncation keeps the first ``context_length - 2`` words, as ``WordVocab`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.data.tokenizers import OpenClipBPE, TextTokenizer, WordVocab
from vlmforge.errors import UserError

WORD_PATTERN = r"[a-z0-9]+|[^\sa-z0-9]"  # vlmforge.data.tokenizers._WORD, on lower-cased text


def word_tokenizer(vocab: WordVocab) -> Any:
    """The ``tokenizers.Tokenizer`` that gives the ids ``vocab`` gives (before padding)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel(vocab.stoi, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>",
        special_tokens=[("<start>", vocab.start_id), ("<end>", vocab.end_id)],
    )
    return tok


def fast_tokenizer(tok: TextTokenizer, context_length: int, extra_specials: tuple[str, ...] = ()) -> Any:
    """A transformers fast tokenizer that pads to ``context_length`` with id 0 and encodes like ``tok``."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(tok, WordVocab):
        fast = PreTrainedTokenizerFast(
            tokenizer_object=word_tokenizer(tok),
            bos_token="<start>",
            eos_token="<end>",
            unk_token="<unk>",
            pad_token="<pad>",
            model_max_length=context_length,
            additional_special_tokens=list(extra_specials) or None,
        )
        fast.padding_side = "right"
        return fast
    assert isinstance(tok, OpenClipBPE)
    inner = getattr(tok._tok, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers tokenizer
    if inner is None:
        raise UserError(
            f"the run's tokenizer {tok.name!r} is open_clip's own BPE, which has no tokenizer files here",
            hint="export with --format open_clip (open_clip rebuilds that tokenizer by itself)",
        )
    return inner


def is_simple_bpe(tok: TextTokenizer) -> bool:
    """open_clip's bundled OpenAI BPE (what open_clip uses when a config names no HF tokenizer)."""
    return isinstance(tok, OpenClipBPE) and type(tok._tok).__name__ == "SimpleTokenizer"


def save_tokenizer_files(tok: TextTokenizer, folder: Path, context_length: int) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` in ``folder``."""
    fast_tokenizer(tok, context_length).save_pretrained(str(folder))
