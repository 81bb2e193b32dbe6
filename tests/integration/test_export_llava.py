"""Export of trained LLaVA runs to transformers, checked with plain transformers only: the exported folder
answers the held-out digit questions token for token as vlmforge does (same prompts, same pixels, same
VQA accuracy as `vlmforge eval`), its logits are vlmforge's, a bfloat16 export says so, and every run
folder's config.json loads the weights next to it or fails loudly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import last_json, run_cli
from vlmforge.config.schema import EvalRecipe, FinetuneRecipe
from vlmforge.config.shipped import find_recipe
from vlmforge.data.conversations import IMAGE, prompt_ids, split_conversations
from vlmforge.errors import UserError

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

DPO_TINY = find_recipe("debug/llava-dpo-tiny")
BATCH = EvalRecipe(run=Path(".")).batch_size  # `vlmforge eval`'s batches: the same left padding


def _export(run_dir: Path, out: Path, dtype: torch.dtype = torch.float32, stage: str | None = None) -> Path:
    from vlmforge.interop.hf_llava import export

    out.mkdir()
    export(run_dir, out, stage, dtype)
    return out


@pytest.fixture(scope="module")
def exported(llava_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(llava_run, tmp_path_factory.mktemp("export") / "fp32")


@pytest.fixture(scope="module")
def loaded(exported: Path) -> tuple[Any, Any]:
    """(model, processor) as a transformers user loads the export."""
    model = transformers.LlavaForConditionalGeneration.from_pretrained(exported).eval()
    return model, transformers.AutoProcessor.from_pretrained(exported)


@pytest.fixture(scope="module")
def ours(llava_run: Path) -> tuple[Any, Any, FinetuneRecipe]:
    from vlmforge.runs.artifacts import load_finetuned

    model, tokenizer, recipe, _ = load_finetuned(llava_run)
    return model, tokenizer, recipe


@pytest.fixture(scope="module")
def held_out(ours: tuple[Any, Any, FinetuneRecipe]) -> Any:
    return split_conversations(ours[2].stages[-1].data, ours[2].model.vision.image_size)[1]


def _inputs(processor: Any, data: Any, indices: range, mean: Any, std: Any) -> Any:
    """The processor's batch for the first question of each conversation. The digits are upscaled from
    8 px in memory, not read from files: the processor gets them at the encoder's side in [0, 1]."""
    conversations, images = [], []
    for i in indices:
        question = data.turns(i)[0][1].replace(f"{IMAGE}\n", "")
        conversations.append(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        )
        pixels = data.image(i) * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
        images.append([pixels])
    return processor.apply_chat_template(
        conversations,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        processor_kwargs={"images": images, "padding": True, "do_rescale": False},
    )


def test_transformers_answers_the_held_out_questions_as_vlmforge_does(
    llava_run: Path, loaded: tuple[Any, Any], ours: tuple[Any, Any, FinetuneRecipe], held_out: Any
) -> None:
    from vlmforge.evaluate.metrics import exact_match
    from vlmforge.evaluate.vqa import answer_ids
    from vlmforge.evaluate.vqa_accuracy import vqa_score
    from vlmforge.verbs import evaluate

    model, processor = loaded
    our_model, tokenizer, recipe = ours
    data_cfg = recipe.stages[-1].data
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    predictions, references = [], []
    for start in range(0, len(held_out), BATCH):
        indices = range(start, min(start + BATCH, len(held_out)))
        questions = [held_out.turns(i)[0][1] for i in indices]
        inputs = _inputs(processor, held_out, indices, data_cfg.mean, data_cfg.std)
        prompts = [
            ids[mask].tolist()
            for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"].bool(), strict=True)
        ]
        assert prompts == [prompt_ids(tokenizer, q, "chat", 16, image_id) for q in questions]
        ours_pixels = torch.stack([held_out.image(i) for i in indices])
        assert (inputs["pixel_values"] - ours_pixels).abs().max() < 1e-6

        generated = model.generate(**inputs)[
            :, inputs["input_ids"].shape[1] :
        ]  # greedy: the export's default
        expected = answer_ids(our_model, tokenizer, questions, [held_out.image(i) for i in indices], 4)
        assert generated.tolist() == expected  # token for token, padding after </s> included
        predictions += processor.batch_decode(generated, skip_special_tokens=True)
        references += [held_out.turns(i)[1][1] for i in indices]

    evaluated = evaluate.run(EvalRecipe(run=llava_run))  # what `vlmforge eval --run` computes
    scores = evaluated.metrics["vqa"]
    assert (
        vqa_score(predictions, [[r] for r in references])["accuracy"] == scores["accuracy"] > 0.1
    )  # chance: 0.1
    assert exact_match(predictions, references) == scores["exact_match"]


def test_exported_logits_are_vlmforges(
    loaded: tuple[Any, Any], ours: tuple[Any, Any, FinetuneRecipe], held_out: Any
) -> None:
    model, processor = loaded
    data_cfg = ours[2].stages[-1].data
    inputs = _inputs(processor, held_out, range(8), data_cfg.mean, data_cfg.std)
    with torch.no_grad():
        theirs = model(**inputs).logits
        mine = ours[0](**inputs).logits
    assert (theirs - mine).abs().max().item() <= 1e-5


def test_export_files_and_configs(exported: Path, ours: tuple[Any, Any, FinetuneRecipe]) -> None:
    import json

    tokenizer, recipe = ours[1], ours[2]
    names = {path.name for path in exported.iterdir()}
    assert "model.safetensors" in names and not any(n.endswith((".bin", ".pt", ".ckpt")) for n in names)
    config = json.loads((exported / "config.json").read_text())
    assert (
        config["image_token_index"]
        == tokenizer.convert_tokens_to_ids(IMAGE)
        != config["text_config"]["vocab_size"] - 1
    )
    assert config["image_seq_length"] == recipe.model.image_tokens
    assert config["vision_feature_layer"] == recipe.model.vision_feature_layer
    assert config["vision_feature_select_strategy"] == "default" and config["dtype"] == "float32"
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["do_sample"] is False and generation["max_new_tokens"] == recipe.eval[0].max_new_tokens
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )


def test_bfloat16_export_loads_in_bfloat16(
    llava_run: Path, tmp_path: Path, loaded: tuple[Any, Any], held_out: Any, ours: tuple[Any, Any, Any]
) -> None:
    import json

    out = _export(llava_run, tmp_path / "bf16", torch.bfloat16)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = transformers.LlavaForConditionalGeneration.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    full = loaded[0].state_dict()
    assert all(
        torch.equal(value, full[name].to(torch.bfloat16)) for name, value in model.state_dict().items()
    )
    data_cfg = ours[2].stages[-1].data
    inputs = _inputs(loaded[1], held_out, range(4), data_cfg.mean, data_cfg.std)
    inputs["pixel_values"] = inputs["pixel_values"].to(torch.bfloat16)
    assert model.generate(**inputs).shape[0] == 4


def test_each_stage_folder_loads_its_weights_and_the_run_root_fails_loudly(
    llava_run: Path, ours: tuple[Any, Any, FinetuneRecipe]
) -> None:
    from safetensors.torch import load_file

    image_id = ours[1].convert_tokens_to_ids(IMAGE)
    for stage in ours[2].stages:
        folder = llava_run / "stages" / stage.name
        model = transformers.LlavaForConditionalGeneration.from_pretrained(folder)
        saved = load_file(folder / "model.safetensors")
        assert model.config.image_token_index == image_id
        assert saved.keys() == model.state_dict().keys()
        assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())
    with pytest.raises(OSError, match=r"model\.safetensors"):  # a config.json, no weights: no default model
        transformers.LlavaForConditionalGeneration.from_pretrained(llava_run)


def test_stage_choice_and_unfinished_stages(llava_run: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from safetensors.torch import load_file

    first = _export(llava_run, tmp_path / "align", stage="align")
    model = transformers.LlavaForConditionalGeneration.from_pretrained(first)
    saved = load_file(llava_run / "stages" / "align" / "model.safetensors")
    assert all(torch.equal(value, saved[name]) for name, value in model.state_dict().items())
    assert "ASSISTANT" not in (first / "chat_template.jinja").read_text()  # the stage's plain template
    with pytest.raises(UserError, match="'nope' is not a stage"):
        _export(llava_run, tmp_path / "nope", stage="nope")

    copy = tmp_path / "run"
    shutil.copytree(llava_run, copy, ignore=shutil.ignore_patterns("checkpoints"))
    result = copy / "stages" / "instruct" / "result.json"
    result.write_text(json.dumps({**json.loads(result.read_text()), "status": "interrupted"}))
    with pytest.raises(UserError, match="'instruct' has not finished"):
        _export(copy, tmp_path / "unfinished", stage="instruct")
    default = _export(copy, tmp_path / "last-finished")  # the default: the last finished stage
    assert (default / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


# ------------------------------------------------------------------------------------------ align
@pytest.fixture(scope="module")
def align_run(llava_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("align-run")
    short = (f"from_run={llava_run}", "max_steps=2", "batch_size=8", "eval=[]")
    proc = run_cli("align", "-c", str(DPO_TINY), *short, "--format", "json", cwd=cwd, check=True)
    return cwd / last_json(proc.stdout)["run_dir"]


def test_align_run_exports_and_its_folder_loads(align_run: Path, tmp_path: Path, held_out: Any) -> None:
    from vlmforge.runs.artifacts import load_aligned

    policy, _, _, recipe, _ = load_aligned(align_run)
    out = _export(align_run, tmp_path / "aligned")
    model = transformers.LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = transformers.AutoProcessor.from_pretrained(out)
    inputs = _inputs(processor, held_out, range(8), recipe.data.mean, recipe.data.std)
    with torch.no_grad():
        assert (model(**inputs).logits - policy(**inputs).logits).abs().max().item() <= 1e-5
    in_place = transformers.LlavaForConditionalGeneration.from_pretrained(align_run)  # its config.json
    assert all(torch.equal(value, model.state_dict()[name]) for name, value in in_place.state_dict().items())
    with pytest.raises(UserError, match="align run: it has no stages"):
        _export(align_run, tmp_path / "staged", stage="instruct")
