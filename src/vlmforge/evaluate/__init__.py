"""Evaluation: the tasks each model family supports (``tasks``), their metrics as pure functions
(``metrics``, ``caption_metrics``, ``vqa_accuracy``, ``choice_metrics``, ``grounding_metrics``, ``vqa``,
``preference``), captioning with the project's decoding (``captioning``) and the files results are written
to (``results``). The verb is ``vlmforge.verbs.evaluate``."""
