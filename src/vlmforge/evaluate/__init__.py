"""Evaluation: the tasks each model family supports (``tasks``), their metrics as pure functions
(``metrics``, ``caption_metrics`` with the COCO caption evaluation's tokenisation ``ptb_tokenizer`` and
``meteor``, ``vqa``, ``preference``), captioning with the project's decoding (``captioning``) and the files
results are written to (``results``). The verb is ``vlmforge.verbs.evaluate``."""
