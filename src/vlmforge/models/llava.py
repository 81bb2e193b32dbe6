"""LLaVA on transformers' ``LlavaForConditionalGeneration``: a CLIP vision encoder, a projector (linear or
LLaVA-1.5's mlp2x_gelu) and a Llama-style LLM, built from the recipe's size fields (so ``device="meta"``
plans LLaVA-1.5-7B without a download), with pretrained towers loaded only when training asks for them.

A stage chooses what trains (``prepare_stage``); LoRA adapters come from peft and are merged back into
the plain model when the stage hands its weights to the next one (``plain_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.llava import LlavaModel
from vlmforge.errors import UserError, missing_extra
from vlmforge.models import llava_adapter, llava_anyres, llava_qlora
from vlmforge.models.llava_projectors import custom_projector
from vlmforge.models.transformers_lib import transformers_module
from vlmforge.storage import write_text, writing

PROJECTOR = "model.multi_modal_projector."
NEWLINE = llava_anyres.NEWLINE  # LLaVA-NeXT's row separator trains with the projector
TRAINABLE_PREFIXES: dict[str, tuple[str, ...]] = {
    "projector": (PROJECTOR, NEWLINE),
    "projector+llm": (PROJECTOR, NEWLINE, "model.language_model.", "lm_head."),
    "lora": (),
    "projector+lora": (PROJECTOR, NEWLINE),
    "adapter": (),  # llava_adapter.trainable_name decides
}
IGNORE_INDEX = -100  # label of tokens that carry no loss (prompts, image tokens, padding)
# The projector activation a run folder's config.json names for the `linear` projector. Its weights there
# are one `linear` layer, which transformers' projector (linear_1, act, linear_2) does not have: given a
# name transformers does not know, `from_pretrained` stops with this message instead of loading the rest
# and initialising the projector at random. `vlmforge.interop.hf_llava` exports such runs exactly.
UNLOADABLE_LINEAR = "vlmforge-linear-projector: export the run to load it with transformers"
# The same for MAPL's mapper, which has no transformers counterpart at all (export refuses it too).
UNLOADABLE_MAPL = "vlmforge-mapl-projector: load the run with vlmforge (transformers has no MAPL mapper)"
UNLOADABLE_ADAPTER = "vlmforge-llama-adapter: load the run with vlmforge (transformers has no such prompts)"
CONFIG = "config.json"


def hf_config(cfg: LlavaModel, vocab_size: int, image_id: int) -> Any:
    """The transformers ``LlavaConfig`` of the recipe's sizes, images scattered into ``image_id`` (the
    tokenizer's ``<image>``). Training replaces the ``linear`` and ``mapl`` projectors
    (``custom_projector``); the ``linear`` one's activation here, the identity, is what export writes."""
    tf = transformers_module()
    vision = tf.CLIPVisionConfig(
        hidden_size=cfg.vision.width,
        num_hidden_layers=cfg.vision.layers,
        num_attention_heads=cfg.vision.heads,
        intermediate_size=cfg.vision.intermediate_size,
        patch_size=cfg.vision.patch_size,
        image_size=cfg.vision.image_size,
        hidden_act="quick_gelu" if cfg.vision.quick_gelu else "gelu",
    )
    text = tf.LlamaConfig(
        hidden_size=cfg.llm.hidden_size,
        num_hidden_layers=cfg.llm.layers,
        num_attention_heads=cfg.llm.heads,
        num_key_value_heads=cfg.llm.kv_heads or cfg.llm.heads,
        intermediate_size=cfg.llm.intermediate_size,
        vocab_size=vocab_size,
        max_position_embeddings=cfg.llm.max_position_embeddings,
        rope_theta=cfg.llm.rope_theta,
        rms_norm_eps=cfg.llm.rms_norm_eps,
        tie_word_embeddings=False,
        attention_bias=cfg.adapter is not None,  # LLaMA-Adapter V2's bias tuning: zero-initialised
        mlp_bias=cfg.adapter is not None,
    )
    single = tf.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_id,
        image_seq_length=cfg.image_tokens,
        projector_hidden_act="gelu" if cfg.projector == "mlp2x_gelu" else "linear",
        vision_feature_select_strategy="default",
        vision_feature_layer=cfg.vision_feature_layer,
        architectures=["LlavaForConditionalGeneration"],
    )
    return llava_anyres.next_config(single, cfg) if cfg.image_layout == "anyres" else single


def planned_image_id(cfg: LlavaModel, vocab_size: int) -> int:
    """The ``<image>`` id before a tokenizer exists (planning on the meta device, where no image token is
    scattered): where ``build_tokenizer`` puts it in a vocabulary it builds, else the last id (a
    pretrained tokenizer gets it appended). Training and loading set the tokenizer's own id."""
    from vlmforge.data.conversations import BUILT_IMAGE_ID

    return BUILT_IMAGE_ID if cfg.tokenizer.kind != "pretrained" else vocab_size - 1


def build_model(
    cfg: LlavaModel, vocab_size: int, device: str = "cpu", image_id: int | None = None
) -> torch.nn.Module:
    """A randomly initialised LLaVA of the recipe's sizes; pretrained towers are loaded unless on meta.
    ``image_id``: the tokenizer's ``<image>`` (default ``planned_image_id``)."""
    image_id = planned_image_id(cfg, vocab_size) if image_id is None else image_id
    model = _random_model(cfg, vocab_size, device, image_id)
    if device != "meta":
        load_pretrained_towers(model, cfg)
    return model


def _random_model(cfg: LlavaModel, vocab_size: int, device: str, image_id: int) -> torch.nn.Module:
    tf = transformers_module()
    with torch.device(device):
        config = hf_config(cfg, vocab_size, image_id)
        anyres = cfg.image_layout == "anyres"
        model = (tf.LlavaNextForConditionalGeneration if anyres else tf.LlavaForConditionalGeneration)(config)
        projector = custom_projector(cfg)
        if projector is not None:
            model.model.multi_modal_projector = projector
        if cfg.adapter is not None:
            llava_adapter.install_prompts(model, cfg)
    if cfg.adapter is not None:
        _zero_llm_biases(model)
    return model


def _zero_llm_biases(model: torch.nn.Module) -> None:
    """Bias tuning starts from the LLM as it is: every added bias zero (transformers' init may not be)."""
    with torch.no_grad():
        for name, param in model.model.language_model.named_parameters():
            if name.endswith(".bias") and not param.is_meta:
                param.zero_()


def trained_model(cfg: LlavaModel, vocab_size: int, image_id: int, weights: Path) -> torch.nn.Module:
    """A finetuned model for inference: the recipe's architecture with a stage's saved weights."""
    model = _random_model(cfg, vocab_size, "cpu", image_id)
    load_saved_weights(model, weights)
    return model.eval()


def write_run_config(folder: Path, cfg: LlavaModel, vocab_size: int, image_id: int) -> None:
    """``folder/config.json``: the recipe's ``LlavaConfig``, so that transformers'
    ``LlavaForConditionalGeneration.from_pretrained(folder)`` loads the weights saved next to it, and
    fails loudly where there are none (a run root, an unfinished stage) or where they are not in its
    layout (the linear projector), instead of falling back to its default 7B configuration."""
    config = hf_config(cfg, vocab_size, image_id)
    if cfg.projector in ("linear", "mapl"):
        config.projector_hidden_act = UNLOADABLE_LINEAR if cfg.projector == "linear" else UNLOADABLE_MAPL
    if cfg.adapter is not None:
        config.projector_hidden_act = UNLOADABLE_ADAPTER
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / CONFIG, config.to_json_string())


def vocab_size_for(cfg: LlavaModel, tokenizer: Any) -> int:
    """The LLM's vocabulary: ``llm.vocab_size`` when set (at least the tokenizer's), else the tokenizer's."""
    size, wanted = len(tokenizer), cfg.llm.vocab_size
    if wanted is not None and wanted < size:
        raise UserError(
            f"model.llm.vocab_size {wanted} is smaller than the tokenizer's {size} tokens",
            hint=f"set model.llm.vocab_size >= {size}, or leave it unset",
        )
    return wanted or size


def image_size(cfg: LlavaModel, model: torch.nn.Module) -> int:
    return cfg.input_side


def context_length(cfg: LlavaModel, model: torch.nn.Module) -> int:
    """Text tokens per sample (the image's tokens come on top)."""
    return cfg.max_text_tokens


def sequence_logps(model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Summed log-probability of each row's answer tokens (its non-ignored labels) in a collated batch."""
    from vlmforge.losses import answer_logps

    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        **llava_anyres.vision_inputs(model, batch["pixel_values"]),
    )
    return answer_logps(out.logits, batch["labels"], IGNORE_INDEX)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy that never trains: every parameter frozen, in eval mode."""
    import copy

    reference = copy.deepcopy(model).eval()
    reference.requires_grad_(False)
    return reference


# ----------------------------------------------------------------------------------------- stages
def prepare_stage(model: torch.nn.Module, cfg: LlavaModel, trainable: str) -> torch.nn.Module:
    """Freeze everything but what the stage trains; wrap with peft LoRA adapters for LoRA stages."""
    if trainable == "adapter":
        llava_adapter.add_scales(model)
        for name, param in model.named_parameters():
            param.requires_grad_(llava_adapter.trainable_name(name))
        return model
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(TRAINABLE_PREFIXES[trainable]))
    if "lora" not in trainable:
        return model
    assert cfg.lora is not None  # the recipe validator requires it for LoRA stages
    try:
        import peft
    except ImportError:
        raise missing_extra("peft", "llava") from None
    lora = peft.LoraConfig(
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target,
        bias="none",
    )
    try:
        wrapped = peft.get_peft_model(model, lora)
    except ValueError as exc:  # no module matched the target expression
        raise UserError(f"model.lora.target: {exc}", hint="match LLM linear layers, e.g. .*q_proj") from None
    for name, param in wrapped.named_parameters():  # peft froze the projector: thaw it if the stage says
        if (PROJECTOR in name or NEWLINE in name) and trainable == "projector+lora":
            param.requires_grad_(True)
    return wrapped


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The LLaVA model without peft wrappers or stage-only scales: LoRA updates and LLaMA-Adapter scales
    merged into the base weights (QLoRA's into the 16-bit weights its 4-bit layers were made from)."""
    llava_qlora.restore_full_weights(model)
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    llava_adapter.merge_scales(model)
    return model


# ---------------------------------------------------------------------------------------- weights
def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The plain model's weights as safetensors (what the next stage and evaluation load)."""
    from safetensors.torch import save_model

    with writing(path) as tmp:
        save_model(model, str(tmp))


def load_saved_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    if not path.is_file():
        raise UserError(f"model weights not found: {path}", hint="is this a finished finetune stage?")
    missing, unexpected = load_model(model, str(path), strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path} does not match the model ({len(missing)} missing, {len(unexpected)} unexpected keys, "
            f"e.g. {[*missing, *unexpected][:2]})",
            hint="the weights must come from a run of the same model section",
        )


def load_pretrained_towers(model: torch.nn.Module, cfg: LlavaModel) -> None:
    """Copy a pretrained LLaVA, then pretrained CLIP and Llama weights, into the model. A larger vocabulary
    (``<image>`` and padding rows) keeps the pretrained rows; new rows start at their mean."""
    tf = transformers_module()
    if cfg.pretrained is not None:  # a whole LLaVA first; named towers then replace its parts
        source = _from_pretrained(tf.LlavaForConditionalGeneration, cfg.pretrained, "model.pretrained")
        _copy_state(model, source.state_dict(), "model.pretrained")
    if cfg.vision.pretrained is not None:
        _load_vision_tower(model, cfg, tf)
    if cfg.llm.pretrained is not None:
        source = _from_pretrained(tf.LlamaForCausalLM, cfg.llm.pretrained, "model.llm.pretrained")
        state = source.state_dict()
        head = state.pop("lm_head.weight")
        body = {k.removeprefix("model."): v for k, v in state.items()}
        body["embed_tokens.weight"] = _grow_rows(body["embed_tokens.weight"], model.lm_head.weight.shape[0])
        fresh = llava_adapter.added_by_adapter if cfg.adapter is not None else None
        _copy_state(model.model.language_model, body, "model.llm.pretrained", fresh)
        with torch.no_grad():
            model.lm_head.weight.copy_(_grow_rows(head, model.lm_head.weight.shape[0]))


def _load_vision_tower(model: torch.nn.Module, cfg: LlavaModel, tf: Any) -> None:
    """A vlmforge CLIP run's or open_clip export's image tower (converted to transformers' names), else a
    transformers CLIPVisionModel folder or hub name."""
    from vlmforge.models.transformers_clip import open_clip_vision_tower

    field = "model.vision.pretrained"
    assert cfg.vision.pretrained is not None
    found = open_clip_vision_tower(cfg.vision.pretrained, field)
    if found is None:
        state = _from_pretrained(tf.CLIPVisionModel, cfg.vision.pretrained, field).state_dict()
    else:
        state, quick_gelu = found
        if quick_gelu != cfg.vision.quick_gelu:
            raise UserError(
                f"{field}: {cfg.vision.pretrained} was trained with "
                f"{'QuickGELU' if quick_gelu else 'GELU'}, the recipe's vision tower uses "
                f"{'QuickGELU' if cfg.vision.quick_gelu else 'GELU'}",
                hint=f"set model.vision.quick_gelu={str(quick_gelu).lower()}",
            )
    tower = model.model.vision_tower
    if not any(key.startswith("vision_model.") for key in tower.state_dict()):  # the bare transformer
        state = {key.removeprefix("vision_model."): value for key, value in state.items()}
    _copy_state(tower, state, field)


def _from_pretrained(cls: Any, name: str, field: str) -> Any:
    try:
        return cls.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"{field}: cannot load {name!r}: {str(exc).splitlines()[0]}",
            hint="give a local folder written by save_pretrained, or unset HF_HUB_OFFLINE to download",
        ) from None


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    if weight.shape[0] > rows:
        raise UserError(
            f"the pretrained LLM has {weight.shape[0]} vocabulary rows, more than the model's {rows}",
            hint="set model.llm.vocab_size to at least the pretrained vocabulary + 1 (<image>)",
        )
    extra = weight.mean(0, keepdim=True).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra])


def _copy_state(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    field: str,
    fresh: Callable[[str], bool] | None = None,
) -> None:
    """Load ``state`` strictly, except for parameters ``fresh`` says the source cannot have (they keep
    their initial values)."""
    if fresh is not None:
        kept = {name: value for name, value in module.state_dict().items() if fresh(name)}
        state = {**kept, **state}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = "; ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise UserError(
            f"{field}: the pretrained weights do not match the recipe's sizes: {detail}",
            hint="set the size fields to the pretrained model's configuration",
        ) from None
