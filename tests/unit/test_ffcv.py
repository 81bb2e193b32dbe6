"""FFCV (`data.kind: ffcv`, `vlmforge curate --write ffcv`): the written file holds the source's samples at
the training side, training on it sees exactly the samples vlmforge's sampler picks (same ids as the same
run on the source), and without the extra the user gets the install hint. FFCV needs system libraries, so
the tests that run it skip where the `ffcv` extra is not installed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs_ffcv
from vlmforge.config.schema import DigitsData, FfcvData
from vlmforge.data.sources import open_source
from vlmforge.errors import UserError


def test_ffcv_source_without_the_extra_names_the_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from vlmforge.data.ffcv import ffcv_set

    monkeypatch.setitem(sys.modules, "ffcv", None)  # import ffcv -> ImportError
    with pytest.raises(UserError) as error:
        ffcv_set(FfcvData(path=tmp_path / "x.beton", image_size=16))
    assert "vlmforge[ffcv]" in (error.value.hint or "") and "libturbojpeg" in (error.value.hint or "")


@needs_ffcv
def test_beton_holds_the_source_samples_at_the_training_side(digits_beton: Path) -> None:
    from vlmforge.data.ffcv import read_info

    digits = open_source(DigitsData())
    stored = open_source(FfcvData(path=digits_beton, image_size=16, mean=(0.5,) * 3, std=(0.5,) * 3))
    info = read_info(digits_beton)
    assert info["side"] == 16 and info["count"] == len(digits) == len(stored)
    assert stored.keys == digits.keys and stored.captions == digits.captions
    assert np.array_equal(stored.labels, digits.labels) and stored.classnames == digits.classnames
    for i in (0, 300, len(digits) - 1):  # JPEG at quality 90: close to, not equal to, the source pixels
        difference = (stored.image(i) - digits.image(i)).abs().mean()
        assert stored.image(i).shape == (3, 16, 16) and difference < 0.1


@needs_ffcv
def test_ffcv_image_size_must_match_the_file(digits_beton: Path) -> None:
    with pytest.raises(UserError, match="holds 16 px images"):
        open_source(FfcvData(path=digits_beton, image_size=32))
