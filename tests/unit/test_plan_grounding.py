"""Planning a grounding recipe counts the Kosmos-2 location tokens: the model it builds on the meta device
has their embedding and output rows."""

from __future__ import annotations

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.planning.phases import phases, planned_vocab_size

WORD_VOCABULARY = 1000  # what planning assumes for a word vocabulary before the data is read


def _recipe(*overrides: str) -> FinetuneRecipe:
    recipe = load_recipe("finetune", find_recipe("debug/llava-grounding-tiny"), list(overrides))
    assert isinstance(recipe, FinetuneRecipe)
    return recipe


def test_location_tokens_are_planned() -> None:
    eight = _recipe()
    assert planned_vocab_size(eight) == WORD_VOCABULARY + 2 + 8 * 8  # <box>, </box>, 64 cells
    assert planned_vocab_size(_recipe("stages.0.data.location_bins=32")) == WORD_VOCABULARY + 2 + 32 * 32
    assert planned_vocab_size(_recipe("model.llm.vocab_size=5000")) == 5000  # an explicit size wins
    model = phases(eight)[0].build("meta")
    assert model.get_input_embeddings().num_embeddings == WORD_VOCABULARY + 66
    assert model.get_output_embeddings().out_features == WORD_VOCABULARY + 66
