"""``train.attention``: the kernel choice reaches transformers models (attn_implementation) and open_clip
towers (torch.nn.attention.sdpa_kernel around the training step), seen in the aten operators that run;
flash runs torch's CPU kernel here and is refused on a GPU without a FlashAttention kernel."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.shipped import find_recipe
from vlmforge.errors import UserError
from vlmforge.models.attention import attention_kernels


def _kernel_flags() -> tuple[bool, bool, bool]:
    """Which SDPA kernels torch may use right now: (math, flash, memory-efficient)."""
    backends = torch.backends.cuda
    return backends.math_sdp_enabled(), backends.flash_sdp_enabled(), backends.mem_efficient_sdp_enabled()


@pytest.mark.parametrize(
    ("attention", "flags"),
    [("eager", (True, False, False)), ("flash", (False, True, False)), ("sdpa", (True, True, True))],
)
def test_the_training_step_runs_under_the_chosen_kernels(attention: str, flags: tuple[bool, ...]) -> None:
    from vlmforge.training.contrastive import ContrastiveModule

    recipe = load_recipe("pretrain", find_recipe("debug/clip-tiny"), [f"train.attention={attention}"])
    module = ContrastiveModule(recipe, vocab_size=40)
    seen: list[tuple[bool, bool, bool]] = []

    def objective(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen.append(_kernel_flags())
        return {"loss": torch.zeros(())}

    module.objective_terms = objective
    module.training_step({"epoch": torch.tensor(0), "position": torch.tensor(0)}, 0)
    assert seen == [flags]
    assert _kernel_flags() == (True, True, True)  # restored after the step


def _attention_ops(run: Callable[[], object], attention: str) -> set[str]:
    """The aten attention operators a forward pass ran under ``attention``'s kernel choice."""
    from torch.profiler import profile

    with profile() as profiled, attention_kernels(attention):
        run()
    return {event.name for event in profiled.events() if "attention" in event.name}


SDPA = "aten::scaled_dot_product_attention"


def test_open_clip_towers_run_the_chosen_kernel() -> None:
    """nn.MultiheadAttention in training (grad on) calls SDPA, restricted to the chosen kernel."""
    from vlmforge.models.contrastive import build_model

    model = build_model(load_recipe("pretrain", find_recipe("debug/clip-tiny")).model, 40).train()
    images, tokens = torch.randn(2, 3, 16, 16), torch.randint(0, 40, (2, 16))

    def forward() -> object:
        return model(images, tokens)

    assert _attention_ops(forward, "eager") == {SDPA, "aten::_scaled_dot_product_attention_math"}
    assert _attention_ops(forward, "flash") == {SDPA, "aten::_scaled_dot_product_flash_attention_for_cpu"}


def test_transformers_models_get_the_attn_implementation() -> None:
    from vlmforge.models.attention import use_attention
    from vlmforge.models.llava import build_model

    model = build_model(load_recipe("finetune", find_recipe("debug/llava-tiny")).model, vocab_size=64)
    ids = torch.randint(0, 60, (2, 8))

    def forward() -> object:
        return model.model.language_model(input_ids=ids, attention_mask=torch.ones_like(ids))

    for attention in ("eager", "sdpa", "flash"):
        use_attention(model, attention)
        configs = [model.config, model.config.text_config, model.config.vision_config]
        expected = "sdpa" if attention == "flash" else attention  # flash-attn is not installed here
        assert [c._attn_implementation for c in configs] == [expected] * 3
    use_attention(model, "eager")
    assert _attention_ops(forward, "eager") == set()  # transformers' own matmuls, no SDPA
    use_attention(model, "flash")
    assert _attention_ops(forward, "flash") == {SDPA, "aten::_scaled_dot_product_flash_attention_for_cpu"}


def test_flash_runs_on_cpu_and_is_refused_on_an_older_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmforge.models import attention
    from vlmforge.training.requirements import check_runnable

    check_runnable(load_recipe("pretrain", find_recipe("debug/clip-tiny"), ["train.attention=flash"]))
    monkeypatch.setattr(attention, "flash_attn_installed", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    problem = attention.attention_problem("flash", on_cpu=False)
    assert problem is not None and "Tesla V100" in problem.message
    assert "pip install flash-attn" in (problem.hint or "") and "train.attention=sdpa" in (problem.hint or "")
    assert attention.attention_problem("sdpa", on_cpu=False) is None
    with pytest.raises(UserError, match=r"train\.attention"):
        load_recipe("pretrain", find_recipe("debug/clip-tiny"), ["train.attention=xformers"])
