"""One module per verb, each with one entry function ``run(recipe) -> result`` that reads as that verb's
steps. Verbs import only lower layers (run lifecycle and artifacts, training, evaluation, planning,
curation internals, models, data, config), never each other."""
