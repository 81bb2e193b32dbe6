"""`vlmforge finetune` with QLoRA (model.lora.quantize: nf4) on a tiny pretrained Llama saved to disk: the
stages train against 4-bit LLM layers (bitsandbytes on CPU here, on CUDA in the gpu test), and the saved
weights are the 16-bit pretrained ones plus the merged low-rank updates, never weights rounded to 4 bits."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import last_json, run_cli

pytest.importorskip("bitsandbytes", reason="the qlora extra: pip install 'vlmforge[qlora]'")


def _tiny_llama(folder: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        vocab_size=30,  # fewer rows than the word tokenizer needs: the run adds the rest
        max_position_embeddings=64,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(folder)


def _needs_cuda() -> pytest.MarkDecorator:
    import torch

    return pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize(
    "device",
    [
        pytest.param([], id="cpu"),
        pytest.param(
            ["train.accelerator=gpu", "train.precision=bf16-mixed"],
            id="cuda-bf16",
            marks=[pytest.mark.gpu, _needs_cuda()],
        ),
    ],
)
def test_qlora_stages_merge_low_rank_updates_into_the_16_bit_weights(
    device: list[str], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    _tiny_llama(tmp_path / "llama")
    overrides = [
        f"model.llm.pretrained={tmp_path / 'llama'}",
        "model.lora.rank=2",
        "model.lora.quantize=nf4",
        "stages.0.max_steps=5",
        "stages.1.trainable=lora",
        "stages.1.max_steps=10",
        "eval=[]",
        *device,
    ]
    proc = run_cli("finetune", "-c", "debug/llava-tiny", *overrides, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / last_json(proc.stdout)["run_dir"]
    pretrained = load_file(str(tmp_path / "llama" / "model.safetensors"))
    projector_stage, lora_stage = (
        load_file(str(p)) for p in sorted(run_dir.glob("stages/*/model.safetensors"))
    )
    for layer in range(2):
        name = f"layers.{layer}.self_attn.q_proj.weight"
        start = pretrained[f"model.{name}"]
        # the projector stage leaves the 4-bit LLM frozen: its saved weights are the exact 16-bit ones
        assert torch.equal(projector_stage[f"model.language_model.{name}"], start)
        update = lora_stage[f"model.language_model.{name}"] - start
        assert update.abs().max() > 0  # the adapters trained and were merged
        assert torch.linalg.matrix_rank(update, atol=1e-6) <= 2  # rank-2 LoRA, no 4-bit rounding noise
    embed = "model.language_model.embed_tokens.weight"
    assert torch.equal(lora_stage[embed], projector_stage[embed])  # frozen in the LoRA stage
