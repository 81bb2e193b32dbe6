"""Caption decoding: greedy and beam search over a next-token function, batched, with an end token, a length
limit and repetition control.

Written here rather than taken from open_clip: ``CoCa.generate`` is built on transformers' beam scorer and
logits processors, whose API changed in transformers 4.57. The decoder is model-agnostic: a model provides a
``StepFn`` (see ``vlmforge.models.generative.decoder_step``) and this module does the search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

# (prefixes [N, t] starting with the start token, image row of each prefix [N]) -> next-token logits [N, V]
StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SpecialTokens:
    start: int
    end: int
    pad: int


@dataclass(frozen=True)
class Decoding:
    method: str = "greedy"  # "greedy" | "beam"
    beam_size: int = 1
    max_length: int = 20  # tokens generated after the start token, end token included
    repetition_penalty: float = 1.0  # 1: off
    no_repeat_ngram: int = 0  # 0: off
    length_penalty: float = 1.0  # beam only: hypotheses ranked by log-prob / length ** this


@dataclass
class Generated:
    tokens: list[list[int]]  # per image: generated ids (no start token; the end token kept if reached)
    log_probs: list[float]  # per image: sum of the log-probabilities the search scored those ids with


def generate(step: StepFn, images: int, special: SpecialTokens, settings: Decoding) -> Generated:
    """Decode one caption for each of ``images`` images."""
    if settings.method == "greedy":
        return greedy(step, images, special, settings)
    if settings.method == "beam":
        return beam_search(step, images, special, settings)
    raise ValueError(f"unknown decoding method {settings.method!r}")


# ------------------------------------------------------------------------------- logits processing
def penalise_repetitions(logits: torch.Tensor, generated: torch.Tensor, penalty: float) -> torch.Tensor:
    """Make tokens already generated less likely: positive logits divided by ``penalty``, negative ones
    multiplied by it (CTRL, Keskar et al. 2019, §4.1)."""
    if penalty == 1.0 or generated.shape[1] == 0:
        return logits
    seen = logits.gather(1, generated)
    return logits.scatter(1, generated, torch.where(seen > 0, seen / penalty, seen * penalty))


def repeated_ngram_tokens(generated: Sequence[int], n: int) -> list[int]:
    """Tokens that would complete an n-gram already present in ``generated`` (no-repeat-n-gram blocking,
    Paulus et al. 2018)."""
    if n < 1 or len(generated) < n - 1:
        return []
    prefix = tuple(generated[len(generated) - n + 1 :]) if n > 1 else ()
    return [
        generated[i + n - 1]
        for i in range(len(generated) - n + 1)
        if tuple(generated[i : i + n - 1]) == prefix
    ]


def next_token_log_probs(
    logits: torch.Tensor, generated: torch.Tensor, special: SpecialTokens, settings: Decoding
) -> torch.Tensor:
    """Log-probabilities of the next token after repetition control; start and pad are never generated.

    ``generated`` [N, t] holds the ids generated so far (start token excluded) for each row of ``logits``."""
    logits = penalise_repetitions(logits.float(), generated, settings.repetition_penalty)
    logits[:, [special.start, special.pad]] = float("-inf")
    if settings.no_repeat_ngram:
        for row, ids in enumerate(generated.tolist()):
            banned = repeated_ngram_tokens(ids, settings.no_repeat_ngram)
            if banned:
                logits[row, banned] = float("-inf")
    return torch.log_softmax(logits, dim=-1)


# ------------------------------------------------------------------------------------------- search
def greedy(step: StepFn, images: int, special: SpecialTokens, settings: Decoding) -> Generated:
    """The most likely next token at every step, until the end token or ``max_length``."""
    tokens = torch.full((images, 1), special.start, dtype=torch.long)
    rows = torch.arange(images)
    done = torch.zeros(images, dtype=torch.bool)
    total = torch.zeros(images, dtype=torch.float64)
    for _ in range(settings.max_length):
        live = (~done).nonzero().squeeze(1)
        log_probs = next_token_log_probs(step(tokens[live], rows[live]), tokens[live, 1:], special, settings)
        best = log_probs.argmax(dim=-1)
        total[live] += log_probs.gather(1, best[:, None]).squeeze(1).double()
        chosen = torch.full((images,), special.pad, dtype=torch.long)
        chosen[live] = best
        tokens = torch.cat([tokens, chosen[:, None]], dim=1)
        done[live] = best == special.end
        if done.all():
            break
    return Generated([_until_end(row, special) for row in tokens[:, 1:].tolist()], total.tolist())


def beam_search(step: StepFn, images: int, special: SpecialTokens, settings: Decoding) -> Generated:
    """Keep the ``beam_size`` most likely prefixes per image; a prefix that takes the end token among the
    best ``beam_size`` candidates becomes a finished hypothesis, and an image is done once it has
    ``beam_size`` of them (early stopping; beam size 1 is exactly greedy). Prefixes still open at
    ``max_length`` count as hypotheses too. The best hypothesis by log-prob / length^``length_penalty`` wins.
    """
    width = settings.beam_size
    tokens = torch.full((images * width, 1), special.start, dtype=torch.long)
    rows = torch.arange(images).repeat_interleave(width)
    scores = torch.full((images, width), float("-inf"), dtype=torch.float64)
    scores[:, 0] = 0.0  # all beams start as the same prefix: expand only the first
    active = list(range(images))  # images still searching, in the order of the rows above
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(images)]

    def rank(log_prob: float, length: int) -> float:
        return log_prob / length**settings.length_penalty

    for _ in range(settings.max_length):
        log_probs = next_token_log_probs(step(tokens, rows), tokens[:, 1:], special, settings)
        vocab = log_probs.shape[1]
        candidates = (scores.view(-1, 1) + log_probs.double()).view(len(active), width * vocab)
        top_scores, top_ids = candidates.topk(min(2 * width, width * vocab), dim=1)
        sources, next_ids, next_scores, still_active = [], [], [], []
        for slot, image in enumerate(active):
            kept: list[tuple[int, int, float]] = []
            for place, (score, flat) in enumerate(
                zip(top_scores[slot].tolist(), top_ids[slot].tolist(), strict=True)
            ):
                if score == float("-inf") or len(kept) == width:
                    break
                beam, token = divmod(flat, vocab)
                source = slot * width + beam
                if token == special.end:
                    if place < width:  # an end token outside the best `width` candidates is not taken
                        sequence = [*tokens[source, 1:].tolist(), token]
                        finished[image].append((rank(score, len(sequence)), score, sequence))
                    continue
                kept.append((source, token, score))
            if len(finished[image]) >= width or not kept:
                continue
            kept += [(kept[0][0], special.pad, float("-inf"))] * (width - len(kept))  # dead beams
            for source, token, score in kept:
                sources.append(source)
                next_ids.append(token)
                next_scores.append(score)
            still_active.append(image)
        if not still_active:
            active = []
            break
        index = torch.tensor(sources)
        tokens = torch.cat([tokens[index], torch.tensor(next_ids)[:, None]], dim=1)
        rows = rows[index]
        scores = torch.tensor(next_scores, dtype=torch.float64).view(len(still_active), width)
        active = still_active
    for slot, image in enumerate(active):  # reached max_length: open prefixes are hypotheses too
        for beam in range(width):
            score = float(scores[slot, beam])
            if score > float("-inf"):
                sequence = tokens[slot * width + beam, 1:].tolist()
                finished[image].append((rank(score, len(sequence)), score, sequence))
    best = [max(hypotheses, key=lambda h: h[0]) for hypotheses in finished]
    return Generated([sequence for _, _, sequence in best], [log_prob for _, log_prob, _ in best])


def _until_end(ids: list[int], special: SpecialTokens) -> list[int]:
    return ids[: ids.index(special.end) + 1] if special.end in ids else ids
