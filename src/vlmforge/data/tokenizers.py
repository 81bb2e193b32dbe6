"""Caption tokenizers. Both return [N, context_length] int64 ids with open_clip's layout:
start token first, end token last, and the end token holds the largest id (open_clip pools text
features at ``argmax(ids)``)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from vlmforge.config.schema import OpenClipTokenizer, Tokenizer, WordTokenizer
from vlmforge.errors import UserError
from vlmforge.storage import write_text

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
SPECIALS = ("<pad>", "<start>", "<unk>")


class WordVocab:
    """A closed word vocabulary: ``<pad>``=0, ``<start>``=1, ``<unk>``=2, words..., ``<end>``=last."""

    kind = "word"
    pad_id = 0
    start_id = 1

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = [*SPECIALS, *words, "<end>"]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> WordVocab:
        words = sorted({w for t in texts for w in _WORD.findall(t.lower())})
        return cls(words)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def end_id(self) -> int:
        return len(self.itos) - 1

    def __call__(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        unk = self.stoi["<unk>"]
        for row, text in enumerate(texts):
            ids = [self.stoi.get(w, unk) for w in _WORD.findall(text.lower())][: context_length - 2]
            ids = [1, *ids, self.end_id]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        words = [self.itos[i] for i in ids if i not in (self.pad_id, self.start_id, self.end_id)]
        return " ".join(words)

    def to_json(self) -> dict[str, object]:
        return {"kind": "word", "words": self.itos[len(SPECIALS) : -1]}


class OpenClipBPE:
    """open_clip's bundled BPE tokenizer (no download). Pads with 0, as open_clip's models expect."""

    kind = "open_clip"
    pad_id = 0

    def __init__(self, name: str) -> None:
        import open_clip

        self.name = name
        try:
            self._tok = open_clip.get_tokenizer(name)
        except Exception as exc:  # a hub tokenizer cannot be fetched offline
            raise UserError(f"model.tokenizer: cannot load the tokenizer of {name!r}: {exc}") from None
        self.vocab_size = int(getattr(self._tok, "vocab_size", 49408))

    def __call__(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        return self._tok(list(texts), context_length=context_length)

    @property
    def start_id(self) -> int:
        return int(self._tok.sot_token_id)

    @property
    def end_id(self) -> int:
        return int(self._tok.eot_token_id)

    def decode(self, ids: Sequence[int]) -> str:
        kept = [i for i in ids if i not in (self.pad_id, self.start_id, self.end_id)]
        return str(self._tok.decode(kept)).strip()

    def to_json(self) -> dict[str, object]:
        return {"kind": "open_clip", "name": self.name}


TextTokenizer = WordVocab | OpenClipBPE


def build_tokenizer(cfg: Tokenizer, texts: Iterable[str]) -> TextTokenizer:
    if isinstance(cfg, WordTokenizer):
        return WordVocab.build(texts)
    assert isinstance(cfg, OpenClipTokenizer)
    return OpenClipBPE(cfg.name)


def save_tokenizer(tok: TextTokenizer, path: Path) -> None:
    write_text(path, json.dumps(tok.to_json(), indent=1))


def load_tokenizer(path: Path) -> TextTokenizer:
    if not path.is_file():
        raise UserError(f"tokenizer file not found: {path}", hint="is this a vlmforge run directory?")
    spec = json.loads(path.read_text(encoding="utf-8"))
    if spec.get("kind") == "word":
        return WordVocab(spec["words"])
    return OpenClipBPE(spec["name"])
