"""Settings of document-level curation of interleaved image-text documents (seed §3.1.3). Defaults are
the OBELICS filtering configuration (huggingface/OBELICS, obelisc/configs/config_filter_web_documents.yaml)
where it has the filter; the dedup settings are the project's."""

from __future__ import annotations

from pydantic import Field

from vlmforge.config.base import Section


class ImageFilters(Section):
    """Per image: size and aspect ratio; across documents: logos (images in many documents) and repeats."""

    min_side: int = Field(150, ge=1, description="Remove images whose width or height is below this.")
    max_side: int = Field(20_000, ge=1, description="Remove images whose width or height is above this.")
    max_aspect_ratio: float = Field(2.0, ge=1, description="Remove images with long/short side above this.")
    max_documents: int = Field(
        10, ge=1, description="Remove an image (by content) from every document when more use it (logos)."
    )
    near_duplicate_bits: int = Field(
        4,
        ge=-1,
        le=32,
        description="pHash distance at or below which a later image repeats an earlier one; -1: off.",
    )


class TextFilters(Section):
    """Word count, character and word n-gram repetition, special characters and stop words (ROOTS /
    OBELICS text filters), at one level: a paragraph or the whole document."""

    min_words: int = Field(4, ge=0, description="Fail with fewer words.")
    max_words: int = Field(1_000, ge=1, description="Fail with more words.")
    character_repetition_length: int = Field(10, ge=1, description="n of the character n-grams.")
    max_character_repetition: float = Field(
        0.1, ge=0, le=1, description="Fail above this share of the most repeated character n-grams."
    )
    word_repetition_length: int = Field(5, ge=1, description="n of the word n-grams.")
    max_word_repetition: float = Field(
        0.1, ge=0, le=1, description="Fail above this share of word n-grams that occur more than once."
    )
    max_special_characters: float = Field(
        0.3, ge=0, le=1, description="Fail above this share of punctuation, digit and space characters."
    )
    min_stop_words: float = Field(0.3, ge=0, le=1, description="Fail below this share of stop words.")


def _document_text() -> TextFilters:
    return TextFilters(
        min_words=10,
        max_words=2_000,
        max_word_repetition=0.2,
        max_special_characters=0.275,
        min_stop_words=0.35,
    )


class DocumentCuration(Section):
    """Image filters, paragraph filters, document filters, then dedup of documents, in that order."""

    seed: int = Field(0, ge=0, description="Seed of the MinHash permutations.")
    images: ImageFilters = Field(default_factory=ImageFilters, description="Filters of each image.")
    paragraphs: TextFilters = Field(default_factory=TextFilters, description="Filters of each paragraph.")
    document: TextFilters = Field(
        default_factory=_document_text,
        description="Filters of the text left in a document (OBELICS' doc level).",
    )
    min_images: int = Field(1, ge=0, description="Drop documents left with fewer images.")
    max_images: int = Field(30, ge=1, description="Drop documents with more images.")
    near_duplicate_jaccard: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Drop a document this similar (MinHash Jaccard of word 5-grams) to an earlier kept one.",
    )
    minhash_permutations: int = Field(
        128, ge=16, le=1024, description="Hash functions of a MinHash signature."
    )
    minhash_bands: int = Field(32, ge=1, description="LSH bands of the MinHash signature.")
