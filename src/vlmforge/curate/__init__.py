"""Curation internals (steps, engines, shard I/O, report); the verb is ``vlmforge.verbs.curate``."""
