"""Data sources, tokenizers and the resumable, rank-aware batch sampler."""
