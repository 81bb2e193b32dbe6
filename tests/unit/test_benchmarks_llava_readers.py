"""The LLaVA-style benchmark readers on tiny copies of the public layouts (tests/llava_benchmark_files.py),
and their errors on malformed files: each names the file and the line, entry or field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.llava_benchmark_files import (
    jpeg_bytes,
    write_mmbench,
    write_pope,
    write_refcoco,
    write_scienceqa,
    write_vqav2,
)
from vlmforge.config.benchmarks_llava import OPTION_LETTER
from vlmforge.errors import UserError
from vlmforge.evaluate.benchmarks.multiple_choice import (
    MMBENCH_COLUMNS,
    ChoiceQuestion,
    choice_prompt,
    read_mmbench,
    read_pandas_tsv,
    read_scienceqa,
)
from vlmforge.evaluate.benchmarks.pope import read_pope
from vlmforge.evaluate.benchmarks.refcoco import read_refcoco
from vlmforge.evaluate.benchmarks.vqav2 import image_name, read_annotations, read_questions, references_for


def test_vqav2_questions_name_coco_images(tmp_path: Path) -> None:
    files = write_vqav2(tmp_path)
    questions = read_questions(files["questions"], files["images"])
    assert [q.question_id for q in questions] == [420, 421, 70]
    assert all(q.image.is_file() for q in questions)
    assert questions[2].image.name == "COCO_val2014_000000000007.jpg"
    references = read_annotations(files["annotations"])
    assert references[70].answers == ["1"] * 9 + ["one"] and references[70].answer_type == "number"
    references_for(questions, references, files["annotations"])  # every question has its annotation


def test_subset_and_missing_images(tmp_path: Path) -> None:
    files = write_vqav2(tmp_path / "vqa")
    two = read_questions(files["questions"], files["images"], max_samples=2)
    assert len(two) == 2 and {q.question_id for q in two} < {420, 421, 70}
    assert two == read_questions(files["questions"], files["images"], max_samples=2)  # the same subset
    sqa = write_scienceqa(tmp_path / "sqa")
    (sqa["images"] / "test" / "8" / "image.png").unlink()
    with pytest.raises(
        UserError, match=r"1 of the 2 images .*problems\.json names are not under .*test/8/image\.png"
    ):
        read_scienceqa(sqa["problems"], sqa["splits"], "test", sqa["images"])


def test_vqav2_test_dev_reads_test2015_images() -> None:
    # test-dev questions say data_subtype "test-dev2015"; the images are COCO's test2015 files
    assert image_name("test-dev2015", 1) == "COCO_test2015_000000000001.jpg"
    assert image_name("val2014", 262148) == "COCO_val2014_000000262148.jpg"


def test_vqav2_malformed(tmp_path: Path) -> None:
    files = write_vqav2(tmp_path)
    document = json.loads(files["questions"].read_text())
    del document["questions"][1]["question_id"]
    files["questions"].write_text(json.dumps(document))
    with pytest.raises(UserError, match=r"questions\.json: questions\[1\]: no field 'question_id'"):
        read_questions(files["questions"], files["images"])
    del document["data_subtype"]
    files["questions"].write_text(json.dumps(document))
    with pytest.raises(UserError, match="data_subtype"):
        read_questions(files["questions"], files["images"])
    files["annotations"].write_text('{"annotations": [')
    with pytest.raises(UserError, match=r"annotations\.json: not valid JSON"):
        read_annotations(files["annotations"])
    with pytest.raises(UserError, match="no such file"):
        read_annotations(tmp_path / "absent.json")


def test_vqav2_annotations_must_cover_the_questions(tmp_path: Path) -> None:
    files = write_vqav2(tmp_path)
    document = json.loads(files["annotations"].read_text())
    document["annotations"] = document["annotations"][:2]
    files["annotations"].write_text(json.dumps(document))
    questions = read_questions(files["questions"], files["images"])
    with pytest.raises(UserError, match=r"no annotation for 1 question.*question_id 70"):
        references_for(questions, read_annotations(files["annotations"]), files["annotations"])


def test_pope_files(tmp_path: Path) -> None:
    files = write_pope(tmp_path)
    questions = read_pope(files["files"][0], files["images"])
    assert [(q.question_id, q.label) for q in questions] == [(1, "yes"), (2, "no"), (3, "yes")]
    assert questions[2].text == "Is there a cup in the image?" and questions[2].image.is_file()


def test_pope_malformed(tmp_path: Path) -> None:
    path = write_pope(tmp_path)["files"][1]
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1].replace('"label": "yes"', '"label": "maybe"') + "\n")
    with pytest.raises(UserError, match=r"coco_pope_random\.json, question 2: label must be 'yes' or 'no'"):
        read_pope(path, tmp_path)
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(UserError, match=r"coco_pope_random\.json, line 2: not valid JSON"):
        read_pope(path, tmp_path)
    path.write_text('{"question_id": 1, "image": "a.jpg", "label": "no"}\n')
    with pytest.raises(UserError, match="question 1: no field 'text'"):
        read_pope(path, tmp_path)


def test_mmbench_tsv(tmp_path: Path) -> None:
    questions = read_mmbench(write_mmbench(tmp_path))
    assert [q.key for q in questions] == ["10", "11", "12"]
    assert questions[0].question == "What animal is shown?"  # "nan" hint left out
    # a quoted field keeps its newline and quotes, as pandas.read_table (LLaVA's reader) reads it
    assert questions[1].question == 'The photo was taken at breakfast.\nIt is hot.\nWhat is in the "cup"?'
    assert questions[1].options == ["tea", "coffee", "milk"]  # up to the first empty option
    assert [q.answer for q in questions] == [1, 1, 0]
    assert [q.category for q in questions] == ["image_topic", "object_localization", "image_topic"]
    assert questions[0].image == jpeg_bytes("chelsea") == questions[2].image  # row 12 names row 10's image


def test_mmbench_tsv_reads_as_pandas_does(tmp_path: Path) -> None:
    """LLaVA reads MMBench with ``pandas.read_table`` (llava/eval/model_vqa_mmbench.py): the same cells."""
    import pandas

    path = write_mmbench(tmp_path)
    expected = pandas.read_table(path, dtype=str, keep_default_na=False).to_dict("records")
    assert [row for _, row in read_pandas_tsv(path, MMBENCH_COLUMNS)] == expected


def test_mmbench_prompt_is_llavas() -> None:
    question = ChoiceQuestion("1", "Hint.\nWhat?", ["x", "y", "z"], 0, "c", b"")
    # the layout of LLaVA's llava/eval/model_vqa_mmbench.py (single_pred_prompt, lang en)
    expected = f"<image>\nHint.\nWhat?\nA. x\nB. y\nC. z\n{OPTION_LETTER}"
    assert choice_prompt(question, question.options, OPTION_LETTER) == expected


def test_mmbench_malformed(tmp_path: Path) -> None:
    path = write_mmbench(tmp_path)
    text = path.read_text()
    path.write_text(text.replace("\tA\timage_topic\t10\t", "\tE\timage_topic\t10\t"))
    with pytest.raises(UserError, match=r"MMBench_DEV_EN\.tsv: line 5: answer 'E'"):  # row 11 spans lines 3-4
        read_mmbench(path)
    lines = text.splitlines()
    path.write_text("\n".join([lines[0], lines[1].replace("\tB\timage_topic", "\tE\timage_topic")]) + "\n")
    with pytest.raises(UserError, match=r"MMBench_DEV_EN\.tsv: line 2: answer 'E'"):
        read_mmbench(path)
    path.write_text(lines[0].replace("\timage\t", "\tpicture\t") + "\n")
    with pytest.raises(UserError, match=r"MMBench_DEV_EN\.tsv: no column image"):
        read_mmbench(path)
    path.write_text(
        "\n".join([lines[0], lines[1].replace("\tB\timage_topic\t", "\tB\timage_topic\t*not base64*")])
    )
    with pytest.raises(UserError, match="line 2: column 'image' is not base64"):
        read_mmbench(path)


def test_scienceqa_img(tmp_path: Path) -> None:
    files = write_scienceqa(tmp_path)
    questions = read_scienceqa(files["problems"], files["splits"], "test", files["images"])
    assert [q.key for q in questions] == ["5", "8"]  # problem 9 has no image
    assert questions[1].question == "Context: Look at the cup.\nWhich drink is this?"
    assert questions[1].options == ["coffee", "juice", "water"] and questions[1].answer == 0
    assert questions[0].category == "natural science"
    assert all(isinstance(q.image, Path) and q.image.is_file() for q in questions)
    # without pid_splits.json, each problem's own split
    assert [q.key for q in read_scienceqa(files["problems"], None, "train", files["images"])] == ["2"]


def test_scienceqa_malformed(tmp_path: Path) -> None:
    files = write_scienceqa(tmp_path)
    with pytest.raises(UserError, match=r"pid_splits\.json: no split 'dev' \(splits: train, val, test"):
        read_scienceqa(files["problems"], files["splits"], "dev", files["images"])
    problems = json.loads(files["problems"].read_text())
    problems["8"]["answer"] = 3
    files["problems"].write_text(json.dumps(problems))
    with pytest.raises(UserError, match=r"problems\.json: 8: 'answer' must index its 3 choices"):
        read_scienceqa(files["problems"], files["splits"], "test", files["images"])
    files["splits"].write_text(json.dumps({"test": ["5", "77"]}))
    with pytest.raises(
        UserError, match=r"pid_splits\.json: 1 id\(s\) of 'test' not in problems\.json, e\.g\. 77"
    ):
        read_scienceqa(files["problems"], files["splits"], "test", files["images"])


def test_refcoco_list(tmp_path: Path) -> None:
    path = write_refcoco(tmp_path)
    items = read_refcoco(path, tmp_path)
    assert [i.expression for i in items] == ["the cat's face", "the coffee cup"]
    assert items[1].box == (4.0, 14.0, 44.0, 50.0)  # [x, y, w, h] -> [x1, y1, x2, y2]
    assert all(i.image.is_file() for i in items)


def test_refcoco_malformed(tmp_path: Path) -> None:
    path = write_refcoco(tmp_path)
    refs = json.loads(path.read_text())
    refs[1]["box"] = [4, 14, 0, 36]
    path.write_text(json.dumps(refs))
    with pytest.raises(UserError, match=r"refs\.json: entry 1: 'box' must be \[x, y, w, h\]"):
        read_refcoco(path, tmp_path)
    path.write_text(json.dumps([{"image": "cat.jpg", "box": [1, 2, 3, 4]}]))
    with pytest.raises(UserError, match=r"refs\.json: entry 0: no field 'expression'"):
        read_refcoco(path, tmp_path)


def test_task_sections_refuse_what_cannot_run() -> None:
    from pydantic import ValidationError

    from vlmforge.config.benchmarks_llava import PopeTask, RefCocoTask

    with pytest.raises(ValidationError, match="distinct names"):
        PopeTask(files=[Path("a/coco_pope_random.json"), Path("b/coco_pope_random.json")], images=Path("i"))
    with pytest.raises(ValidationError, match=r"exactly one '\{\}'"):
        RefCocoTask(path=Path("refs.json"), prompt="Where is it?")
    assert RefCocoTask(path=Path("refs.json")).prompt.format("the cat").endswith("describes: the cat")
