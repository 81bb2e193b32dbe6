"""The base of every recipe section."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Section(BaseModel):
    """Base for every recipe section: unknown keys are errors, assignments are re-validated, and numbers
    must be finite (YAML reads ``1e309`` as infinity: a learning rate of inf would train to NaN)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Seeds go to numpy, torch and Lightning's seed_everything, which take unsigned 32-bit integers.
MAX_SEED = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
