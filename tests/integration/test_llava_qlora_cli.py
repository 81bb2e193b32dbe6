"""`vlmforge validate` of a QLoRA recipe on a machine without a CUDA GPU."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli

QLORA = [
    "model.lora.rank=2",
    "model.lora.quantize=nf4",
    "model.llm.pretrained=lmsys/vicuna-7b-v1.5",
    "stages.1.trainable=lora",
]


def test_validate_refuses_qlora_on_cpu(tmp_path: Path) -> None:
    proc = run_cli("validate", "-c", "debug/llava-tiny", *QLORA, cwd=tmp_path)
    assert proc.returncode == 2
    assert "QLoRA's 4-bit base weights need a CUDA GPU and bitsandbytes" in proc.stdout + proc.stderr
