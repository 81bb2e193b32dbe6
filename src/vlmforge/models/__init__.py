"""Model builders, one per family. ``FAMILIES`` maps a recipe's ``model.kind`` to its builder."""
