"""The attention kernel a model trains with (``train.attention``), for both kinds of towers.

- transformers models (LLaVA's CLIP vision tower and Llama LLM) take it as ``attn_implementation``:
  ``sdpa``, ``eager`` (plain matmuls, no SDPA), or for ``flash`` ``flash_attention_2`` when the
  flash-attn package is installed (else ``sdpa`` restricted to FlashAttention, below).
- open_clip towers call ``torch.nn.functional.scaled_dot_product_attention`` through
  ``nn.MultiheadAttention``; the training step runs inside ``torch.nn.attention.sdpa_kernel``, which
  restricts every SDPA call to the chosen kernels (``eager`` = the math kernel, ``flash`` =
  FlashAttention).

``flash`` runs torch's FlashAttention kernel: on CPU its CPU implementation, on CUDA GPUs of compute
capability 8.0 or newer its FlashAttention-2 kernel. A CUDA GPU where neither that kernel nor flash-attn
runs is refused before the run starts. Nothing falls back silently: an input the kernel cannot take
fails with torch's "no available kernel" error.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vlmforge.errors import UserError

FLASH_HINT = (
    "install flash-attn (pip install flash-attn --no-build-isolation) on an Ampere or newer GPU, "
    "or set train.attention=sdpa (torch picks the fastest kernel that runs)"
)


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def hf_attn_implementation(attention: str) -> str:
    """transformers' ``attn_implementation`` for a ``train.attention`` value."""
    if attention == "flash":
        return "flash_attention_2" if flash_attn_installed() else "sdpa"
    return attention


def sdpa_backends(attention: str) -> list[Any] | None:
    """The SDPA kernels allowed for ``attention`` (None: torch chooses among all of them)."""
    from torch.nn.attention import SDPBackend

    if attention == "eager":
        return [SDPBackend.MATH]
    if attention == "flash":
        return [SDPBackend.FLASH_ATTENTION]
    return None


@contextmanager
def attention_kernels(attention: str) -> Iterator[None]:
    """Run the enclosed forward pass with only the kernels ``attention`` allows."""
    backends = sdpa_backends(attention)
    if backends is None:
        yield
        return
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(backends):
        yield


def use_attention(model: Any, attention: str) -> None:
    """Set the attention implementation of every transformers model inside ``model`` (open_clip towers
    need nothing here: ``attention_kernels`` chooses their kernel at each step)."""
    transformers = sys.modules.get("transformers")
    if transformers is None:  # nothing built from it
        return
    pretrained = transformers.PreTrainedModel
    outermost = [m for m in model.modules() if isinstance(m, pretrained)]
    if outermost:  # the outermost sets its sub-models' too
        outermost[0].set_attn_implementation(hf_attn_implementation(attention))


def attention_problem(attention: str, on_cpu: bool) -> UserError | None:
    """Why ``attention`` cannot run on the devices of this run, or None (torch has a CPU FlashAttention
    kernel; on CUDA it needs flash-attn or a GPU that torch's kernel supports)."""
    if attention != "flash" or on_cpu:
        return None
    import torch

    if flash_attn_installed():
        return None
    major, _ = torch.cuda.get_device_capability(0)
    if torch.backends.cuda.is_flash_attention_available() and major >= 8:
        return None
    return UserError(
        f"train.attention flash: flash-attn is not installed and torch's FlashAttention kernel does not run "
        f"on this GPU ({torch.cuda.get_device_name(0)})",
        hint=FLASH_HINT,
    )
