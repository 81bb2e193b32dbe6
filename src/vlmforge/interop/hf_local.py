"""Reading a transformers folder (``config.json`` + weights + processor files, e.g. ``vlmforge export
--format hf`` or a model saved with ``save_pretrained``) for ``predict`` and ``eval --model``:

- ``model_type: llava``: ``LlavaForConditionalGeneration`` and its ``AutoProcessor``; prompts are the
  processor's chat template (one user message: the image, then the question; generation prompt added)
  with ``<image>`` expanded to ``image_seq_length`` placeholders, tokenized as the processor tokenizes
  a rendered chat. For vlmforge's own exports these are the ids of ``data.conversations.prompt_ids``.
- ``model_type: clip`` / ``siglip``: ``CLIPModel`` / ``SiglipModel`` behind the interface of vlmforge's
  contrastive models (``encode_image``, ``encode_text``, ``logit_scale``), and the folder's tokenizer
  behind that of vlmforge's caption tokenizers.

Images go through vlmforge's square transform (``data.images.square_tensor``) with the image
processor's side, mean and std; an image processor that transform does not reproduce is refused. Its
pixels are those of the processor's PIL backend (``backend="pil"``); transformers' default torchvision
backend resamples a resized image up to one 8-bit level apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vlmforge.errors import UserError
from vlmforge.interop.inference_model import HF_CONFIG, ImageTransform, InferenceModel
from vlmforge.storage import read_json

SOURCE = "transformers folder"
MODEL_CLASSES = {"llava": "LlavaForConditionalGeneration", "clip": "CLIPModel", "siglip": "SiglipModel"}
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, what square_tensor resizes with
CHAT_TEMPLATE = "the folder's chat template"  # InferenceModel.prompt_template of a transformers LLaVA


def load_transformers_folder(path: Path, device: torch.device) -> InferenceModel:
    """The model in a transformers folder, by its ``config.json``'s ``model_type``."""
    model_type = _model_type(path)
    if model_type == "llava":
        return _llava(path, device)
    if model_type in ("clip", "siglip"):
        return _dual_encoder(path, model_type, device)
    raise UserError(
        f"{path / HF_CONFIG}: model_type {model_type!r} is not read here",
        hint=f"transformers folders of model_type {', '.join(MODEL_CLASSES)} are (LLaVA answers "
        "questions, CLIP and SigLIP rank class names)",
    )


def _model_type(path: Path) -> str:
    try:
        config = read_json(path / HF_CONFIG)
    except ValueError as exc:
        raise UserError(f"{path / HF_CONFIG}: not valid JSON ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UserError(f"{path / HF_CONFIG}: no model_type", hint="is this a transformers model folder?")
    return str(config["model_type"])


def _from_pretrained(path: Path, loader: Callable[[str], Any], what: str) -> Any:
    """``loader(path)``; what transformers cannot load is a UserError naming the folder and ``what``."""
    try:
        return loader(str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: transformers cannot load its {what}: {first}",
            hint="give a folder saved with save_pretrained (the model and its processor or tokenizer), "
            "e.g. by vlmforge export --format hf",
        ) from None


def _weights(path: Path) -> Path:
    found = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return found[0] if found else path / "model.safetensors"


# ------------------------------------------------------------------------------------------- images
def image_transform(path: Path, processor: Any) -> ImageTransform:
    """vlmforge's square transform with ``processor``'s side, mean and std; UserError for an image
    processor it does not reproduce (resizing other than the shortest side to the crop side, bicubic,
    then a centre crop and [0, 1] scaling)."""
    cfg = processor.to_dict()
    size, crop = cfg.get("size") or {}, cfg.get("crop_size") or {}
    side = size.get("shortest_edge") if isinstance(size, dict) else None
    problems = [
        ("do_resize", cfg.get("do_resize", True) is True),
        (f"size {size}", side is not None and set(size) <= {"shortest_edge"}),
        ("do_center_crop", cfg.get("do_center_crop") is True),
        (f"crop_size {crop}", crop == {"height": side, "width": side}),
        (f"resample {cfg.get('resample')}", int(cfg.get("resample", BICUBIC)) == BICUBIC),
        ("do_rescale", cfg.get("do_rescale", True) is True),
        (f"rescale_factor {cfg.get('rescale_factor')}", abs(cfg.get("rescale_factor", 0) * 255 - 1) < 1e-6),
    ]
    refused = [name for name, ok in problems if not ok]
    if refused:
        raise UserError(
            f"{path}: its image processor ({cfg.get('image_processor_type', type(processor).__name__)}: "
            f"{', '.join(refused)}) is not the transform vlmforge applies",
            hint="vlmforge reads folders whose images are resized by their shortest side to the crop side "
            "(bicubic), centre-cropped and scaled to [0, 1], as CLIPImageProcessor does",
        )
    normalize = cfg.get("do_normalize", True)
    mean = tuple(float(v) for v in cfg["image_mean"]) if normalize else (0.0, 0.0, 0.0)
    std = tuple(float(v) for v in cfg["image_std"]) if normalize else (1.0, 1.0, 1.0)
    return ImageTransform(int(side), mean, std)


# -------------------------------------------------------------------------------------------- llava
def _llava(path: Path, device: torch.device) -> InferenceModel:
    import transformers

    model = _from_pretrained(path, transformers.LlavaForConditionalGeneration.from_pretrained, "LLaVA model")
    processor = _from_pretrained(path, transformers.AutoProcessor.from_pretrained, "processor")
    if getattr(processor, "chat_template", None) is None:
        raise UserError(
            f"{path}: its processor has no chat template, so how to prompt the model is unknown",
            hint="save the processor with its chat_template (vlmforge export --format hf writes one)",
        )
    config = model.config
    return InferenceModel(
        kind="llava",
        source=SOURCE,
        path=path,
        weights=_weights(path),
        model=model.to(device),
        tokenizer=processor.tokenizer,
        transform=image_transform(path, processor.image_processor),
        context_length=int(config.text_config.max_position_embeddings),
        device=device,
        prompt_template=CHAT_TEMPLATE,
        prompter=chat_prompter(processor, int(config.image_seq_length)),
    )


def chat_prompter(processor: Any, image_tokens: int) -> Callable[[str], list[int]]:
    """question -> the prompt ids ``processor`` gives for one user message of the question and its image
    (where ``<image>`` stands in the question; ``predict`` puts it first), with the generation prompt and
    the image placeholder expanded to ``image_tokens`` placeholders, as the processor expands it."""

    def prompt_ids(question: str) -> list[int]:
        text = processor.apply_chat_template(
            [{"role": "user", "content": chat_content(question, processor.image_token)}],
            add_generation_prompt=True,
            tokenize=False,
        )
        tokenizer = processor.tokenizer
        # as the processor's apply_chat_template tokenizes: no second <s> where the template has one
        specials = tokenizer.bos_token is None or not text.startswith(tokenizer.bos_token)
        expanded = text.replace(processor.image_token, processor.image_token * image_tokens)
        return list(tokenizer(expanded, add_special_tokens=specials)["input_ids"])

    return prompt_ids


def chat_content(question: str, image_token: str = "<image>") -> list[dict[str, str]]:
    """A user message's content: the text of ``question`` around its ``image_token`` with the image in
    its place (vlmforge's questions read ``<image>\nWhat digit is this?``, which a template joining
    items with a newline renders back as is); text only when the question has no image."""
    if image_token not in question:
        return [{"type": "text", "text": question}]
    before, _, after = question.partition(image_token)
    parts = [
        {"type": "text", "text": before.strip()},
        {"type": "image"},
        {"type": "text", "text": after.strip()},
    ]
    return [part for part in parts if part["type"] == "image" or part["text"]]


# ------------------------------------------------------------------------------------- clip, siglip
class DualEncoder(torch.nn.Module):
    """transformers' ``CLIPModel`` or ``SiglipModel`` as vlmforge's contrastive models are used:
    ``encode_image(pixels)``, ``encode_text(ids)`` (optionally L2-normalised), ``logit_scale`` (the log
    temperature) and SigLIP's ``logit_bias``. transformers does not clamp the temperature, nor is it
    clamped here (``max_logit_scale``)."""

    max_logit_scale = float("inf")

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.inner.logit_scale  # type: ignore[no-any-return]

    @property
    def logit_bias(self) -> torch.Tensor | None:
        return getattr(self.inner, "logit_bias", None)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return _features(self.inner.get_image_features(pixel_values=images), normalize)

    def encode_text(self, ids: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return _features(self.inner.get_text_features(input_ids=ids), normalize)


def _features(output: Any, normalize: bool) -> torch.Tensor:
    """The projected embeddings (transformers 5 returns an output whose pooler_output holds them)."""
    feats = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(feats, dim=-1) if normalize else feats


class FolderTokenizer:
    """A transformers tokenizer with the interface of ``vlmforge.data.tokenizers.TextTokenizer``:
    ``tok(texts, context_length)`` -> [N, context_length] ids padded to the full length (as SigLIP was
    trained; CLIP's causal text encoder reads its end token alike), special ids, ``decode``."""

    kind = "transformers"

    def __init__(self, inner: Any) -> None:
        if inner.pad_token is None:
            inner.pad_token = inner.eos_token
        self._tok = inner

    def __call__(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        out = self._tok(
            list(texts), padding="max_length", truncation=True, max_length=context_length, return_tensors="pt"
        )
        return out["input_ids"]  # type: ignore[no-any-return]

    def _id(self, name: str) -> int:
        value = getattr(self._tok, f"{name}_token_id", None)
        return int(value) if value is not None else self.pad_id

    @property
    def pad_id(self) -> int:
        return int(self._tok.pad_token_id) if self._tok.pad_token_id is not None else 0

    @property
    def start_id(self) -> int:
        return self._id("bos")

    @property
    def end_id(self) -> int:
        return self._id("eos")

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode(list(ids), skip_special_tokens=True)).strip()


def _dual_encoder(path: Path, model_type: str, device: torch.device) -> InferenceModel:
    import transformers

    model_class = getattr(transformers, MODEL_CLASSES[model_type])
    model = _from_pretrained(path, model_class.from_pretrained, f"{model_type} model")
    tokenizer = _from_pretrained(path, transformers.AutoTokenizer.from_pretrained, "tokenizer")
    images = _from_pretrained(path, transformers.AutoImageProcessor.from_pretrained, "image processor")
    return InferenceModel(
        kind=model_type,
        source=SOURCE,
        path=path,
        weights=_weights(path),
        model=DualEncoder(model).to(device),
        tokenizer=FolderTokenizer(tokenizer),
        transform=image_transform(path, images),
        context_length=int(model.config.text_config.max_position_embeddings),
        device=device,
    )
