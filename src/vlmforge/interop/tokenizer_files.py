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
    if is_simple_bpe(tok):
        return clip_bpe_tokenizer(tok._tok, context_length)
    inner = getattr(tok._tok, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers tokenizer
    if inner is None:
        raise UserError(
            f"the run's tokenizer {tok.name!r} has no Hugging Face tokenizer files here",
            hint="export with --format open_clip (open_clip rebuilds that tokenizer by itself)",
        )
    return inner


def is_simple_bpe(tok: TextTokenizer) -> bool:
    """open_clip's bundled OpenAI BPE (what open_clip uses when a config names no HF tokenizer)."""
    return isinstance(tok, OpenClipBPE) and type(tok._tok).__name__ == "SimpleTokenizer"


def save_tokenizer_files(tok: TextTokenizer, folder: Path, context_length: int) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` in ``folder``."""
    fast_tokenizer(tok, context_length).save_pretrained(str(folder))


def clip_bpe_tokenizer(simple: Any, context_length: int) -> Any:
    """transformers' ``CLIPTokenizer`` built from open_clip's bundled OpenAI BPE (``simple``, its
    ``SimpleTokenizer``): the same vocabulary, merges and ids, padded with id 0 as open_clip pads.

    The start/end tokens take transformers' names (``<|startoftext|>``, ``<|endoftext|>``) at open_clip's
    ids. The pad token is id 0's ``!``; ``split_special_tokens`` keeps text from matching special tokens,
    so a ``!`` in a caption is ordinary text, as in open_clip. Left different, as in transformers' own
    CLIP tokenizers (whose loader rebuilds the text cleaning from its class): open_clip first repairs text
    with ftfy and ``html.unescape``, so captions with HTML entities (``&amp;``), curly quotes or mojibake
    can get other ids."""
    from transformers import CLIPTokenizer

    vocab = dict(simple.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda item: item[1])]
    fast = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        pad_token=simple.decoder[0],
        model_max_length=context_length,
        split_special_tokens=True,
    )
    fast.padding_side = "right"
    return fast
