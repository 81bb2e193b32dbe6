"""Where weights live: a run's final checkpoint, and where ``model.pretrained`` finds its weights — a
file, an open_clip ``local-dir`` folder, a vlmforge run or export, a transformers folder, an open_clip
pretrained tag (``openai``, ``laion2b_s34b_b79k``) of ``model.arch``, or a Hugging Face hub name
(``openai/clip-vit-base-patch32``). Tags and hub names come only from the local open_clip / Hugging Face
caches when ``HF_HUB_OFFLINE=1``; otherwise the error says which file to place where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlmforge.errors import UserError
from vlmforge.storage import GATHERED_WEIGHTS, list_checkpoints, read_json

# What open_clip and transformers name their weights, best first (safetensors before pickles).
WEIGHT_FILES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "model.safetensors",
    "pytorch_model.bin",
)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def resolve(value: str | Path, arch: str | None, field: str = "model.pretrained") -> Path:
    """The local file or folder holding the weights ``value`` names (a folder for transformers formats)."""
    path = Path(value).expanduser()
    if path.exists():
        return weights_in(path, field)
    name = str(value)
    if arch is not None and is_open_clip_tag(arch, name):
        return open_clip_tag_file(arch, name, field)
    if _looks_like_hub_id(name):
        return hub_folder(name, field)
    tags = ", ".join(open_clip_tags(arch)[:6]) if arch else ""
    raise UserError(
        f"{field}: {value} is not a file or folder on this machine"
        + (f", nor an open_clip pretrained tag of {arch}" if arch else ""),
        hint="give a checkpoint file, an export or run folder, a transformers folder"
        + (f", or one of {arch}'s tags ({tags})" if tags else ""),
    )


def weights_in(path: Path, field: str) -> Path:
    """A file as it is; in a folder: a vlmforge run's final checkpoint, else the weights file open_clip or
    transformers would pick; a transformers folder (``config.json``) is returned whole for conversion."""
    if path.is_file():
        return path
    if (path / "recipe.yaml").is_file():
        return final_checkpoint(path)
    if (path / "open_clip_config.json").is_file():
        for name in WEIGHT_FILES:
            if (path / name).is_file():
                return path / name
    if (path / "config.json").is_file():
        return path
    found = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if found:
        return found[0]
    raise UserError(
        f"{field}: {path} holds no weights vlmforge can read",
        hint="give a checkpoint file, an open_clip local-dir export, a transformers folder "
        "(config.json + weights) or a vlmforge run directory",
    )


# ------------------------------------------------------------------------------------------ runs
def final_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a finished run names in result.json, else its gathered weights (sharded runs), else
    its newest checkpoint file."""
    result_file = run_dir / "result.json"
    if result_file.is_file():
        named = read_json(result_file).get("checkpoint")
        if named and (run_dir / named).is_file():
            return run_dir / named
    weights = run_dir / "checkpoints" / GATHERED_WEIGHTS
    if weights.is_file():
        return weights
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise UserError(
            f"{run_dir}: no checkpoint found", hint="is this a vlmforge run directory that trained?"
        )
    if found[-1].is_dir():
        raise UserError(
            f"{run_dir}: the newest checkpoint {found[-1].name} is a sharded folder and the run has no "
            f"gathered weights (checkpoints/{GATHERED_WEIGHTS} is written when a sharded run finishes)",
            hint="resume the run to its end (vlmforge pretrain -c RECIPE --resume RUN_DIR), then evaluate",
        )
    return found[-1]


# ---------------------------------------------------------------------------- open_clip pretrained tags
def open_clip_tags(arch: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(arch))


def is_open_clip_tag(arch: str, name: str) -> bool:
    return "/" not in name and name in open_clip_tags(arch)


def open_clip_tag_file(arch: str, tag: str, field: str) -> Path:
    """The cached file of open_clip's ``tag`` for ``arch`` (downloaded unless HF_HUB_OFFLINE=1)."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    cfg = open_clip.get_pretrained_cfg(arch, tag)
    hub = cfg.get("hf_hub", "")
    if hub or not offline():
        try:
            found = download_pretrained(cfg)
        except Exception:  # offline and not in the cache
            found = ""
        if found:
            return Path(found)
    repo_id, file = os.path.split(hub) if hub else ("", "")
    where = (
        f"the Hugging Face cache ({_hub_cache()}) as {repo_id}/{file or 'open_clip_pytorch_model.bin'}"
        if hub
        else f"{Path('~/.cache/clip').expanduser()}/{os.path.basename(cfg.get('url', ''))}"
    )
    raise UserError(
        f"{field}: open_clip's weights {arch} {tag!r} are not on this machine (HF_HUB_OFFLINE=1: "
        "nothing is downloaded)",
        hint=f"place them in {where} (e.g. run once with network access), or give the file's path",
    )


# ------------------------------------------------------------------------------------- hub names
def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _hub_cache() -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return str(HF_HUB_CACHE)


def hub_folder(repo_id: str, field: str) -> Path:
    """The local snapshot folder of a hub model (from the cache when HF_HUB_OFFLINE=1)."""
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, local_files_only=offline())
    except Exception as exc:
        raise UserError(
            f"{field}: {repo_id} is not in the Hugging Face cache ({_hub_cache()}) and HF_HUB_OFFLINE=1 "
            f"forbids downloading it ({type(exc).__name__})",
            hint=f"download it once (huggingface-cli download {repo_id}) or give a local folder",
        ) from None
    return weights_in(Path(folder), field)


# ------------------------------------------------------------------------------------- reading
def read_state_dict(path: Path, field: str) -> dict[str, Any]:
    """A checkpoint file's tensors: safetensors, a weights-only torch pickle (Lightning ``.ckpt``:
    its ``state_dict``), or an OpenAI TorchScript archive (read as TorchScript, no pickled Python)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except SafetensorError as exc:
            raise UserError(f"{field}: cannot read {path}: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        state = _torchscript_state(path)
        if state is None:
            raise UserError(f"{field}: cannot read {path} as a weights-only checkpoint: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{field}: {path} does not hold a state dict")
    return state


def strip_prefixes(key: str) -> str:
    """A parameter name without the wrappers training adds (Lightning's ``model.``, DDP's ``module.``,
    torch.compile's ``_orig_mod.``)."""
    for prefix in ("model.", "module.", "_orig_mod."):
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def _torchscript_state(path: Path) -> dict[str, Any] | None:
    """OpenAI's original CLIP files are TorchScript archives; their parameter names are open_clip's."""
    import zipfile

    import torch

    try:  # a TorchScript archive is a zip with compiled code next to the tensors; anything else is not one
        with zipfile.ZipFile(path) as archive:
            if not any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist()):
                return None
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception:
        return None
    state = dict(module.state_dict())
    for key in ("input_resolution", "context_length", "vocab_size"):  # metadata, not weights
        state.pop(key, None)
    return state
