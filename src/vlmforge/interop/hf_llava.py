"""Export a LLaVA run (a finetune stage or an align run) as a transformers folder: what
``LlavaForConditionalGeneration.from_pretrained(out)`` (``LlavaNextForConditionalGeneration`` for the
anyres layout) and ``AutoProcessor.from_pretrained(out)`` load, with nothing of vlmforge installed.

The folder holds the weights (safetensors, in the requested dtype), ``config.json`` (the image token
is the tokenizer's ``<image>``), ``generation_config.json`` (greedy, as ``vlmforge eval`` answers), and
a ``LlavaProcessor``: the run's tokenizer (``<image>`` is its own special token, left padding for batched
generation), a CLIP image processor with the run's side and normalisation, and a chat template that
renders the stage's prompt format, so that ``processor.apply_chat_template(messages,
add_generation_prompt=True, tokenize=True)`` gives the ids of ``vlmforge.data.conversations.prompt_ids``,
each ``<image>`` expanded by the processor to ``image_seq_length`` placeholders.

Stage weights are already plain: LoRA adapters are merged before a stage or an align run saves them,
and loading them into the plain model refuses any key it does not have (``load_saved_weights``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import AlignRecipe, FinetuneRecipe, FinetuneStage, LlavaModel, VqaTask
from vlmforge.errors import UserError
from vlmforge.runs.artifacts import run_verb, stage_completed, stage_dir
from vlmforge.storage import WEIGHTS

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
ALIGN_TRAINING = "training.json"  # an align run's training outcome (``vlmforge.verbs.align.TRAINING``)

# Each content item of a message renders as its text or <image>, items joined by a newline: the layout
# of vlmforge's conversations ("<image>\nWhat digit is this?"), whose <image> the processor expands.
_CONTENT = r"""
{%- macro rendered(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for item in content -%}
{%- if not loop.first %}{{ '\n' }}{% endif -%}
{%- if item['type'] == 'image' %}<image>{% else %}{{ item['text'] }}{% endif -%}
{%- endfor -%}{%- endif -%}
{%- endmacro -%}
"""
# 'chat': <s>USER: question ASSISTANT: answer</s>USER: ... (``conversations.encode``); no system prompt.
CHAT_TEMPLATE = (
    _CONTENT
    + r"""{{- bos_token -}}
{%- for message in messages -%}
{%- if message['role'] == 'user' -%}
USER: {{ rendered(message['content']) }}
{%- if add_generation_prompt or not loop.last %} ASSISTANT:{% endif -%}
{%- elif message['role'] == 'assistant' -%}
{{ ' ' + rendered(message['content']) + eos_token }}
{%- else -%}
{{ raise_exception('this model was trained on user and assistant turns only, without a system prompt') }}
{%- endif -%}
{%- endfor -%}"""
)
# 'plain' (LLaVA's stage 1): <s><image> caption</s>; the question is dropped, one caption per image.
PLAIN_TEMPLATE = (
    _CONTENT
    + r"""{{- bos_token -}}
{%- for message in messages[:2] -%}
{%- if message['role'] == 'user' -%}
{%- if '<image>' in rendered(message['content']) %}<image>{% endif -%}
{%- else -%}
{{ ' ' + rendered(message['content']) + eos_token }}
{%- endif -%}
{%- endfor -%}"""
)
TEMPLATES = {"chat": CHAT_TEMPLATE, "plain": PLAIN_TEMPLATE}


@dataclass(frozen=True)
class ExportSource:
    """What an export reads from a run: the model section, the weights, the tokenizer folder, and how
    the weights were trained to read prompts and images."""

    model: LlavaModel
    weights: Path
    tokenizer: Path
    template: str  # 'chat' | 'plain'
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    max_new_tokens: int  # the run's VQA evaluation's


def export(run_dir: Path, out: Path, stage: str | None, dtype: torch.dtype) -> None:
    """Write the transformers folder of ``run_dir``'s ``stage`` (a finetune run; default: its last
    completed stage) or of an align run (``stage`` None) into ``out``, an existing empty folder, with
    the weights in ``dtype`` (float32, bfloat16 or float16)."""
    from vlmforge.data.conversations import load_tokenizer

    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype} is not one of {', '.join(str(d) for d in DTYPES)}")
    if not out.is_dir() or any(out.iterdir()):
        raise UserError(f"{out}: the export goes into an existing, empty folder")
    source = export_source(run_dir, stage)
    tokenizer = load_tokenizer(source.tokenizer)
    model = transformers_model(source, tokenizer)
    model.generation_config = generation_config(tokenizer, source.max_new_tokens)
    model.to(dtype).save_pretrained(str(out))
    processor(source, tokenizer).save_pretrained(str(out))


# ------------------------------------------------------------------------------------------ source
def export_source(run_dir: Path, stage: str | None) -> ExportSource:
    """The finished stage (finetune run) or training (align run) to export; UserError for anything else."""
    verb = run_verb(run_dir)
    if verb == "finetune":
        recipe = load_recipe("finetune", run_dir / "recipe.yaml")
        assert isinstance(recipe, FinetuneRecipe)
        _refuse_custom(recipe.model, run_dir)
        chosen = _finished_stage(run_dir, recipe, stage)
        data = chosen.data
        return ExportSource(
            recipe.model,
            stage_dir(run_dir, chosen) / WEIGHTS,
            run_dir / "tokenizer",
            chosen.template,
            data.mean,
            data.std,
            _max_new_tokens(recipe.eval),
        )
    if verb == "align":
        return _align_source(run_dir, stage)
    raise UserError(
        f"{run_dir} is a {verb} run: only LLaVA runs export to transformers",
        hint="give a `vlmforge finetune` or `vlmforge align` run directory",
    )


def _finished_stage(run_dir: Path, recipe: FinetuneRecipe, name: str | None) -> FinetuneStage:
    """The stage called ``name``, else the last stage that completed; it must have completed."""
    names = [stage.name for stage in recipe.stages]
    if name is None:
        done = [stage for stage in recipe.stages if stage_completed(stage_dir(run_dir, stage))]
        if not done:
            raise UserError(
                f"{run_dir}: no finetune stage has finished, there are no weights to export",
                hint="resume the run (vlmforge finetune -c RECIPE --resume auto), then export it",
            )
        return done[-1]
    if name not in names:
        raise UserError(f"stage {name!r} is not a stage of {run_dir}", hint=f"its stages: {', '.join(names)}")
    stage = recipe.stages[names.index(name)]
    if not stage_completed(stage_dir(run_dir, stage)):
        raise UserError(
            f"{run_dir}: stage {name!r} has not finished, it has no weights to export",
            hint="resume the run to the end of the stage, or export a finished stage",
        )
    return stage


def _align_source(run_dir: Path, stage: str | None) -> ExportSource:
    if stage is not None:
        raise UserError(
            f"{run_dir} is an align run: it has no stages (stage {stage!r} given)",
            hint="leave the stage unset to export the aligned model",
        )
    recipe = load_recipe("align", run_dir / "recipe.yaml")
    assert isinstance(recipe, AlignRecipe) and recipe.model is not None  # the run saves its model section
    _refuse_custom(recipe.model, run_dir)
    if not stage_completed(run_dir, ALIGN_TRAINING):
        raise UserError(
            f"{run_dir}: the alignment has not finished, there are no weights to export",
            hint="resume it (vlmforge align -c RECIPE --resume auto), then export it",
        )
    return ExportSource(
        recipe.model,
        run_dir / WEIGHTS,
        run_dir / "tokenizer",
        "chat",  # preference pairs are encoded as chat conversations
        recipe.data.mean,
        recipe.data.std,
        _max_new_tokens(recipe.eval),
    )


def _refuse_custom(model: Any, run_dir: Path) -> None:
    """transformers' LLaVA has no MAPL mapper (query tokens + transformer) and no LLaMA-Adapter prompts:
    an export would not load."""
    if model.adapter is not None:
        raise UserError(
            f"{run_dir} has LLaMA-Adapter prompts (model.adapter), which transformers' "
            "LlavaForConditionalGeneration cannot hold: there is no transformers format to export it to",
            hint="use the run folder with `vlmforge eval` / `vlmforge predict`, or tune with lora to export",
        )
    if model.projector == "mapl":
        raise UserError(
            f"{run_dir} uses the MAPL projector, which transformers' LlavaForConditionalGeneration cannot "
            "hold: there is no transformers format to export it to",
            hint="use the run folder with `vlmforge eval` / `vlmforge predict`, or train with projector: "
            "linear or mlp2x_gelu to export",
        )


def _max_new_tokens(tasks: list[Any]) -> int:
    """The answer length the run's VQA evaluation allows (its default when the recipe has none)."""
    vqa = [task for task in tasks if isinstance(task, VqaTask)]
    return (vqa[0] if vqa else VqaTask()).max_new_tokens


# ------------------------------------------------------------------------------------------- model
def transformers_model(source: ExportSource, tokenizer: Any) -> torch.nn.Module:
    """The trained model in transformers' own layout: vlmforge's model is transformers'
    ``LlavaForConditionalGeneration`` except for the ``linear`` projector (see ``exact_linear_projector``)."""
    from vlmforge.runs.artifacts import llava_model

    model = llava_model(source.model, tokenizer, source.weights)
    if source.model.projector == "linear":
        exact_linear_projector(model)
    return model


def exact_linear_projector(model: Any) -> None:
    """Replace vlmforge's one-layer ``LinearProjector`` by transformers' ``LlavaMultiModalProjector``
    (linear_1 -> act -> linear_2) computing the same map: linear_1 is the trained layer, the activation
    ``linear`` (the identity in transformers' ACT2FN) and linear_2 the identity matrix with a zero bias.

    Why this rather than refusing: the export then loads in plain transformers, with no custom code or
    ``trust_remote_code``, and its outputs are the trained model's exactly (multiplying by 1 and adding
    zeros is exact in every float format), at the cost of one extra LLM-width square matrix (16.8 M
    parameters at width 4096, 0.2 % of a 7B model)."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    trained = model.model.multi_modal_projector.linear
    model.config.projector_hidden_act = "linear"
    projector = LlavaMultiModalProjector(model.config).to(trained.weight.dtype)
    width = projector.linear_2.weight.shape[0]
    with torch.no_grad():
        projector.linear_1.weight.copy_(trained.weight)
        projector.linear_1.bias.copy_(trained.bias)
        projector.linear_2.weight.copy_(torch.eye(width))
        projector.linear_2.bias.zero_()
    model.model.multi_modal_projector = projector


def generation_config(tokenizer: Any, max_new_tokens: int) -> Any:
    """Greedy decoding up to ``max_new_tokens``, stopping at ``</s>``: how ``vlmforge eval`` answers."""
    from vlmforge.models.transformers_lib import transformers_module

    return transformers_module().GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        bos_token_id=int(tokenizer.bos_token_id),
        eos_token_id=int(tokenizer.eos_token_id),
        pad_token_id=int(tokenizer.pad_token_id),
    )


# --------------------------------------------------------------------------------------- processor
def processor(source: ExportSource, tokenizer: Any) -> Any:
    """A ``LlavaProcessor``: the run's tokenizer, the image transform of vlmforge's image files (short
    side resized to the encoder's side, bicubic, centre crop, scaled to [0, 1], normalised with the
    run's mean and std), one ``<image>`` placeholder per patch, and the stage's chat template. For the
    anyres layout a ``LlavaNextProcessor``: the image tiled over the run's grid pinpoints, each crop
    transformed as above, as many placeholders as the model reads for the image's size."""
    from PIL import Image

    from vlmforge.models.transformers_lib import transformers_module

    tf = transformers_module()
    side = source.model.vision.image_size
    anyres = source.model.image_layout == "anyres"  # LLaVA-NeXT: the same transform on each crop
    pinpoints = {"image_grid_pinpoints": [list(p) for p in source.model.grid_pinpoints]} if anyres else {}
    images = (tf.LlavaNextImageProcessor if anyres else tf.CLIPImageProcessor)(
        **pinpoints,
        size={"shortest_edge": side},
        crop_size={"height": side, "width": side},
        resample=Image.Resampling.BICUBIC,
        do_center_crop=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(source.mean),
        image_std=list(source.std),
        do_convert_rgb=True,
    )
    # the tokenizer's own template too: a pretrained tokenizer's would render another prompt format
    tokenizer.chat_template = TEMPLATES[source.template]
    return (tf.LlavaNextProcessor if anyres else tf.LlavaProcessor)(
        image_processor=images,
        tokenizer=_left_padding(tokenizer),
        patch_size=source.model.vision.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, which 'default' drops
        chat_template=TEMPLATES[source.template],
    )


def _left_padding(tokenizer: Any) -> Any:
    """The tokenizer as saved for generation: batches padded on the left, so that every prompt is
    continued from its own last token (as ``vlmforge eval`` batches them); without the flags that only
    say how this machine loaded it."""
    tokenizer.padding_side = "left"
    tokenizer.init_kwargs["padding_side"] = "left"  # what save_pretrained writes
    for key in ("is_local", "local_files_only"):
        tokenizer.init_kwargs.pop(key, None)
    return tokenizer
