"""Parameter-efficient (and full) finetuning of a contrastive model for classification: each method wraps
an open_clip ``CLIP`` in a ``ClipClassifier`` whose trainable parameters are the method's only."""
