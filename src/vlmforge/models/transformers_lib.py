"""transformers, imported where a LLaVA-family model needs it, with the install hint when it is missing."""

from __future__ import annotations

from typing import Any

from vlmforge.errors import missing_extra


def transformers_module() -> Any:
    """transformers, or the install hint for the llava extra."""
    try:
        import transformers
    except ImportError:
        raise missing_extra("transformers", "llava") from None
    transformers.logging.set_verbosity_error()  # random init of a config is what a recipe asks for
    return transformers
