"""MinHash signatures of word shingles and a banded LSH index (Broder 1997; the banding of Leskovec,
Rajaraman and Ullman, *Mining of Massive Datasets*, ch. 3): near-duplicate documents by estimated
Jaccard similarity without comparing every pair."""

from __future__ import annotations

import hashlib

import numpy as np

MERSENNE = np.uint64((1 << 61) - 1)


def shingles(words: list[str], n: int = 5) -> set[str]:
    """Word n-grams (the whole text when shorter than n)."""
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def permutations(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The a, b of ``count`` hash functions (a*x + b) mod (2^61 - 1)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(1, (1 << 61) - 1, count, dtype=np.uint64)
    b = rng.integers(0, (1 << 61) - 1, count, dtype=np.uint64)
    return a, b


def signature(items: set[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per hash function, the minimum over the items' 32-bit hashes (uint64 arithmetic wraps, as in
    datasketch's MinHash)."""
    if not items:
        return np.full(len(a), np.iinfo(np.uint64).max, dtype=np.uint64)
    hashes = np.array(
        [int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=4).digest(), "little") for s in items],
        dtype=np.uint64,
    )
    with np.errstate(over="ignore"):
        values = (hashes[:, None] * a[None, :] + b[None, :]) % MERSENNE
    return values.min(axis=0)


def jaccard_estimate(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(x == y))


class LshIndex:
    """Signatures cut into ``bands``; two signatures sharing a whole band are candidates."""

    def __init__(self, bands: int) -> None:
        self.bands = bands
        self.buckets: dict[tuple[int, bytes], list[int]] = {}
        self.signatures: list[np.ndarray] = []

    def candidates(self, sig: np.ndarray) -> list[int]:
        found: set[int] = set()
        for band, part in enumerate(np.array_split(sig, self.bands)):
            found.update(self.buckets.get((band, part.tobytes()), []))
        return sorted(found)

    def add(self, sig: np.ndarray) -> int:
        index = len(self.signatures)
        self.signatures.append(sig)
        for band, part in enumerate(np.array_split(sig, self.bands)):
            self.buckets.setdefault((band, part.tobytes()), []).append(index)
        return index

    def best_match(self, sig: np.ndarray) -> tuple[int, float]:
        """The indexed signature most similar to ``sig`` among the candidates: (index, Jaccard) or (-1, 0)."""
        scored = [(jaccard_estimate(sig, self.signatures[i]), i) for i in self.candidates(sig)]
        if not scored:
            return -1, 0.0
        similarity, index = max(scored, key=lambda pair: (pair[0], -pair[1]))
        return index, similarity
