"""Evaluation: the tasks each model family supports (``tasks``), their metrics as pure functions
(``metrics``, ``caption_metrics`` with the COCO caption evaluation's tokenisation ``ptb_tokenizer`` and
``meteor``, ``vqa_accuracy``, ``choice_metrics``, ``grounding_metrics``, ``vqa``, ``preference``),
captioning with the project's decoding (``captioning``), scoring of predictions made elsewhere
(``scoring``) and the files and plots results are written to (``results``, ``plots``). The verb is
``vlmforge.verbs.evaluate``."""
