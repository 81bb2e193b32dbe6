"""Recipes of `vlmforge finetune` on a contrastive model: parameter-efficient (or full) tuning of a
pretrained CLIP for image classification, the method chosen by ``method:`` (a tagged union).

A contrastive finetune recipe is recognised by its ``method`` key (a LLaVA finetune has ``stages``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vlmforge.config.base import Section, Seed
from vlmforge.config.models import ClipModel, SigLipModel
from vlmforge.config.training import DeviceConfig, OptimConfig, RunRecipe

Shots = Literal[1, 2, 4, 8, 16]
Tower = Literal["visual", "text"]
# open_clip's transformer blocks: the two MLP layers (nn.MultiheadAttention reads its out_proj weight
# directly, never calling the layer, so an adapter there would stay unused)
DEFAULT_LORA_MODULES = ["c_fc", "c_proj"]


def _templates_valid(value: list[str] | None) -> list[str] | None:
    for template in value or []:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}'")
    return value


class ClassificationBase(Section):
    """Fields every classification source shares: the held-out split, few-shot sampling, prompts."""

    shots: Shots | None = Field(
        None,
        description="Training images per class, drawn with the recipe's seed (CoOp's 1/2/4/8/16); "
        "default: every training image.",
    )
    val_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Held-out test fraction: the fixed stratified split a pretrain on this data holds out.",
    )
    templates: list[str] | None = Field(
        None, description="Zero-shot prompt templates with one '{}' (default: the starting model's)."
    )
    batch_size: int = Field(32, ge=1, description="Images per optimizer step.")

    _one_placeholder = field_validator("templates")(_templates_valid)


class DigitsClasses(ClassificationBase):
    """sklearn's 1,797 handwritten digits, ten classes ``zero`` .. ``nine``, at the model's image size."""

    kind: Literal["digits"] = "digits"
    classes: list[int] | None = Field(
        None, description="Digits kept (default: all ten), e.g. the classes a run never saw captions of."
    )

    @field_validator("classes")
    @classmethod
    def _digits(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (
            not value or len(set(value)) != len(value) or not set(value) <= set(range(10))
        ):
            raise ValueError(f"classes {value} must be distinct digits 0..9")
        return value


class ClassFolders(ClassificationBase):
    """ImageNet-style classes: one sub-folder of images per class under ``path``."""

    kind: Literal["class_folders"] = "class_folders"
    path: Path = Field(description="Folder with one sub-folder of images per class (e.g. imagenet/train).")
    test_path: Path | None = Field(
        None, description="Folder laid out alike, evaluated instead of a val_fraction split of `path`."
    )
    classnames: Path | None = Field(
        None,
        description="Text file of class names, one line per class sub-folder in sorted order, either "
        "'name' or 'folder<TAB>name' (default: the folder names).",
    )
    classes: int | None = Field(
        None,
        ge=2,
        description="Number of classes, for `vlmforge plan` where `path` is not (default: counted).",
    )


ClassificationData = Annotated[DigitsClasses | ClassFolders, Field(discriminator="kind")]


class LinearProbe(Section):
    """Logistic regression on frozen image features, L2 strength chosen on a validation split of the
    training images (CLIP, Radford et al. 2021, appendix A.3)."""

    method: Literal["linear_probe"] = "linear_probe"
    c_values: list[float] = Field(
        default_factory=lambda: [10.0**e for e in range(-6, 7)],
        min_length=1,
        description="Inverse L2 strengths C swept (CLIP: 1e-6..1e6, log-spaced).",
    )
    validation_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of the training images the sweep validates on."
    )
    max_iter: int = Field(1000, ge=1, description="L-BFGS iterations per fit.")


class TrainedMethod(Section):
    """Fields of every gradient-trained method."""

    max_steps: int = Field(100, ge=1, description="Optimizer steps.")


class FullFinetune(TrainedMethod):
    """Every image-tower weight and a zero-shot-initialised head train; WiSE-FT then interpolates the
    weights with the zero-shot ones (Wortsman et al. 2022)."""

    method: Literal["full"] = "full"
    alphas: list[float] = Field(
        default_factory=lambda: [i / 10 for i in range(11)],
        min_length=2,
        description="Mixing coefficients a evaluated: (1-a) zero-shot + a finetuned weights.",
    )

    @field_validator("alphas")
    @classmethod
    def _unit(cls, value: list[float]) -> list[float]:
        if any(not 0 <= a <= 1 for a in value):
            raise ValueError(f"alphas {value} must lie in [0, 1]")
        return sorted(set(value))


class LoraFamily(TrainedMethod):
    """Low-rank adapters through peft on the named linear layers of one or both towers: LoRA (Hu et al.
    2022), DoRA (Liu et al. 2024), VeRA (Kopiczko et al. 2024)."""

    method: Literal["lora", "dora", "vera"]
    towers: list[Tower] = Field(["visual"], min_length=1, description="Towers adapted: visual, text.")
    modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LORA_MODULES),
        min_length=1,
        description="Regular expressions for the last part of linear-layer names in the towers' blocks.",
    )
    rank: int = Field(8, ge=1, description="Adapter rank r (VeRA: the shared random matrices' rank).")
    alpha: float = Field(16, gt=0, description="LoRA/DoRA scaling numerator (scale = alpha / rank).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")


class CoOp(TrainedMethod):
    """Context Optimization (Zhou et al. 2022): learned context vectors replace the prompt's words."""

    method: Literal["coop"] = "coop"
    context_tokens: int = Field(16, ge=1, description="Learned context vectors M (CoOp: 16).")
    class_specific: bool = Field(False, description="One context per class (CSC) instead of one shared.")
    init: str | None = Field(
        None,
        description="Words whose embeddings start the shared context (e.g. 'a photo of a'); "
        "default: N(0, 0.02).",
    )

    @model_validator(mode="after")
    def _init_fits(self) -> CoOp:
        if self.init is not None and self.class_specific:
            raise ValueError("init starts a shared context: unset it or class_specific")
        return self


class Vpt(TrainedMethod):
    """Visual Prompt Tuning (Jia et al. 2022): learned tokens prepended to the image tower's sequence."""

    method: Literal["vpt"] = "vpt"
    prompt_tokens: int = Field(8, ge=1, description="Prompt tokens per layer.")
    deep: bool = Field(False, description="VPT-deep: new prompts at every layer; else VPT-shallow.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the prompts.")


class ClipAdapter(TrainedMethod):
    """CLIP-Adapter (Gao et al. 2021): a bottleneck MLP on a tower's output, blended with it by a residual
    ratio."""

    method: Literal["clip_adapter"] = "clip_adapter"
    branches: list[Tower] = Field(["visual"], min_length=1, description="Outputs adapted: visual, text.")
    reduction: int = Field(4, ge=1, description="Bottleneck width = embedding width / reduction.")
    ratio: float = Field(0.2, ge=0, le=1, description="Residual ratio: ratio * adapted + (1-ratio) * input.")


MethodConfig = Annotated[
    LinearProbe | FullFinetune | LoraFamily | CoOp | Vpt | ClipAdapter, Field(discriminator="method")
]


class ContrastiveFinetuneRecipe(RunRecipe):
    """`vlmforge finetune` on a contrastive model: tune a CLIP for classification with one method, and
    compare it with the untuned model's zero-shot accuracy on the same held-out images."""

    seed: Seed = Field(0, description="Seed for few-shot sampling, initialisation and data order.")
    init_from: Path = Field(
        description="The starting model: a pretrain run directory, a folder of runs (its newest completed "
        "one), or an exported model folder (open_clip local-dir, transformers CLIP)."
    )
    model: ClipModel | SigLipModel | None = Field(
        None,
        discriminator="kind",
        description="The starting model's section, for `vlmforge plan` before init_from is on this machine "
        "(tuning reads the model from init_from).",
    )
    data: ClassificationData = Field(description="Labelled images, by kind: digits or class_folders.")
    method: MethodConfig = Field(description="What trains, by method.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimizer and schedule.")
    train: DeviceConfig = Field(default_factory=DeviceConfig, description="Device (one) and precision.")

    @model_validator(mode="after")
    def _one_device(self) -> ContrastiveFinetuneRecipe:
        if self.world_size != 1:
            raise ValueError(
                "contrastive finetuning runs on one device: set train.devices and num_nodes to 1"
            )
        return self

    @property
    def planned_classes(self) -> int:
        """Classes the classifier separates, known before the data is read where possible."""
        if isinstance(self.data, DigitsClasses):
            return len(self.data.classes or range(10))
        if self.data.classes is not None:
            return self.data.classes
        if self.data.path.is_dir():
            return sum(1 for p in self.data.path.iterdir() if p.is_dir())
        raise ValueError(f"data.path {self.data.path} is not here: set data.classes to plan the recipe")

    def planned_steps(self) -> int:
        """Optimizer steps; the linear probe's one pass of feature extraction over the few-shot images."""
        if isinstance(self.method, TrainedMethod):
            return self.method.max_steps
        if self.data.shots is None:
            raise ValueError("the linear probe is planned from data.shots: set it to plan the recipe")
        return -(-self.data.shots * self.planned_classes // self.data.batch_size)
