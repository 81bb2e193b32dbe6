"""Recipe sections for standard benchmarks read from their own public file layouts at a local path (no
downloads): ``tasks:`` of an eval recipe. Each runs on one loaded model (a run directory or an exported
folder) through ``vlmforge.evaluate.benchmarks``; they need no ``data:`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from vlmforge.config.base import Section
from vlmforge.config.decoding import CaptionDecoding


class BenchmarkTask(Section):
    """What every benchmark section has: a result name and a fixed subset size. Its files are its
    ``Path`` fields (checked, all at once, before the model loads)."""

    kind: str
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Results go to eval/<name>.json (default: the kind); name two tasks of one kind apart.",
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Evaluate a fixed random subset of at most this many items (the same for every model; "
        "default: all).",
    )

    @property
    def result_name(self) -> str:
        return self.name or self.kind

    def paths(self) -> dict[str, Path]:
        """{field (with list position): path} for every file or folder this benchmark reads."""
        found: dict[str, Path] = {}
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, Path):
                found[field] = value
            elif isinstance(value, list):
                found |= {f"{field}[{i}]": v for i, v in enumerate(value) if isinstance(v, Path)}
        return found


class ImageNetTask(BenchmarkTask):
    """Zero-shot classification on ImageNet-style class folders (torchvision ImageFolder layout): top-1,
    top-5 and mean per-class accuracy with prompt-ensembled class embeddings (CLIP §3.1.4)."""

    kind: Literal["imagenet"] = "imagenet"
    root: Path = Field(
        description="Folder of class folders (root/<class>/*.JPEG|jpg|png), e.g. ILSVRC2012's val/ sorted "
        "into its 1000 synset folders; classes are the folders in sorted order."
    )
    classnames: Path | None = Field(
        None,
        description="Class names: a text file with one name per line in sorted-folder order, or a JSON "
        "object {folder: name} (default: the folder names).",
    )
    templates: Path | None = Field(
        None,
        description="Prompt templates, one per line with '{}' for the class name (default: the model's "
        "zero-shot templates).",
    )


class KarpathySplit(BenchmarkTask):
    """The Karpathy split file of COCO or Flickr30k and the images it names."""

    annotations: Path = Field(
        description="The Karpathy split JSON (dataset_coco.json or dataset_flickr30k.json): images with "
        "filepath (COCO), filename, split, sentences[].raw and cocoid or imgid."
    )
    images: Path = Field(
        description="Images root: COCO images are read from <images>/<filepath>/<filename>, Flickr30k "
        "images from <images>/<filename>."
    )
    split: Literal["train", "restval", "val", "test"] = Field(
        "test", description="Which images of the split file (the standard results are on test)."
    )


class KarpathyRetrievalTask(KarpathySplit):
    """Image-to-text and text-to-image retrieval, recall@k, on the Karpathy test split (5k COCO / 1k
    Flickr30k images, 5 captions each): an image query hits when any of its captions is retrieved, a
    caption query when its own image is (CLIP §3.1.5, Table 13)."""

    kind: Literal["karpathy_retrieval"] = "karpathy_retrieval"
    ks: list[int] = Field([1, 5, 10], min_length=1, description="Recall cut-offs.")
    captions_per_image: int | None = Field(
        5,
        ge=1,
        description="The first N sentences of each image (5: the standard protocol; a few COCO images have "
        "6 or 7); null: all of them.",
    )


class KarpathyCaptioningTask(KarpathySplit, CaptionDecoding):
    """Caption the split's images with the model's decoder and score against all of each image's
    sentences with the COCO caption metrics (coco-caption). Generative models (CoCa) only. The decoding
    fields are those of the captioning task."""

    kind: Literal["karpathy_captioning"] = "karpathy_captioning"


class SugarCrepeTask(BenchmarkTask):
    """SugarCrepe (Hsieh et al. 2023): each image's caption against one hard negative; accuracy = the
    caption scores strictly higher (a tie is a miss), per file and the mean over files."""

    kind: Literal["sugarcrepe"] = "sugarcrepe"
    files: list[Path] = Field(
        min_length=1,
        description="SugarCrepe JSON files ({id: {filename, caption, negative_caption}}): any of add_att, "
        "add_obj, replace_att, replace_obj, replace_rel, swap_att, swap_obj.json; each is reported under "
        "its file name.",
    )
    images: Path = Field(description="COCO val2017 images folder: <images>/<filename>.")


class AroTask(BenchmarkTask):
    """ARO's Visual Genome Relation or Attribution (Yuksekgonul et al. 2023): each image, cropped to its
    box, scores its true caption against the false one; accuracy = the true caption scores strictly
    higher (a tie is a miss), overall and per relation (or attribute pair)."""

    kind: Literal["aro"] = "aro"
    annotations: Path = Field(
        description="visual_genome_relation.json or visual_genome_attribution.json: a list of {image_path, "
        "bbox_x, bbox_y, bbox_w, bbox_h, true_caption, false_caption, relation_name | attributes}."
    )
    images: Path = Field(description="ARO's images folder (<root>/images): <images>/<image_path>.")
