"""DPO against RLHF (a reward model, then RLOO) on the same digits preference pairs, from the same tiny
finetuned LLaVA: held-out VQA accuracy before and after, the reward model's held-out pairwise accuracy
with and without facts (Fact-RLHF), the RL step's reward gain over the start and its KL, and wall-clock
of each `vlmforge align` run (one process each, as a user runs them).

    python benchmarks/rlhf.py [--workdir DIR]

Writes benchmarks/results/rlhf.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import write_result

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "debug"
FINETUNE_SHORT = ("stages.0.max_steps=10", "stages.1.max_steps=60")  # tests/conftest.py's llava_run


def cli(cwd: Path, *args: str) -> tuple[dict[str, Any], float]:
    """Run `vlmforge` with ``--format json``; its result and its wall-clock seconds."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'cli'}"}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "vlmforge_cli", *args, "--format", "json"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1]), round(seconds, 1)


def start_accuracy(run_dir: Path) -> float:
    """Held-out VQA accuracy of the finetuned model itself on the preference pairs' held-out split."""
    from vlmforge.config.schema import DigitsPreferences, VqaTask
    from vlmforge.data.conversations import load_tokenizer
    from vlmforge.data.preferences import split_preferences
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.runs.artifacts import load_finetuned

    model, tokenizer, recipe, _ = load_finetuned(run_dir)
    del tokenizer
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    val = split_preferences(DigitsPreferences(), recipe.model.vision.image_size)[1]
    task = VqaTask(max_new_tokens=4)
    return float(
        evaluate_model(recipe.model, model, tokenizer, recipe.model.max_text_tokens, val, [task])["vqa"][
            "accuracy"
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="vlmforge-rlhf-"))
    work.mkdir(parents=True, exist_ok=True)
    finetuned, finetune_s = cli(
        work, "finetune", "-c", str(RECIPES / "llava-tiny.yaml"), *FINETUNE_SHORT, "eval=[]"
    )
    start_dir = work / finetuned["run_dir"]
    dpo, dpo_s = cli(
        work, "align", "-c", str(RECIPES / "llava-dpo-tiny.yaml"), "eval=[{kind: vqa, max_new_tokens: 4}]"
    )
    reward, reward_s = cli(work, "align", "-c", str(RECIPES / "llava-reward-tiny.yaml"))
    plain, plain_s = cli(
        work,
        "align",
        "-c",
        str(RECIPES / "llava-reward-tiny.yaml"),
        "reward.facts=false",
        "name=llava-reward-plain",
    )
    reward_dir = work / reward["run_dir"]
    rloo, rloo_s = cli(
        work, "align", "-c", str(RECIPES / "llava-rloo-tiny.yaml"), f"rloo.reward_run={reward_dir}"
    )
    records = [json.loads(line) for line in (work / rloo["run_dir"] / "metrics.jsonl").open()]
    payload = {
        "setup": "debug/llava-tiny finetune (10 + 60 steps), then digits preference pairs (1437 train, "
        "360 held out)",
        "start": {"heldout_vqa_accuracy": start_accuracy(start_dir), "finetune_seconds": finetune_s},
        "dpo": {
            "recipe": "debug/llava-dpo-tiny",
            "heldout_vqa_accuracy": dpo["metrics"]["eval"]["vqa"]["accuracy"],
            "seconds": dpo_s,
        },
        "reward_model": {
            "recipe": "debug/llava-reward-tiny",
            "facts": reward["metrics"]["eval"]["reward"],
            "no_facts": plain["metrics"]["eval"]["reward"],
            "seconds": reward_s,
            "seconds_no_facts": plain_s,
        },
        "rloo": {
            "recipe": "debug/llava-rloo-tiny",
            "heldout_vqa_accuracy": rloo["metrics"]["eval"]["vqa"]["accuracy"],
            "heldout": rloo["metrics"]["eval"]["rloo"],
            "seconds": rloo_s,
            "log": [
                {k: r[k] for k in ("step", "reward", "kl", "answer_tokens", "heldout_vqa_accuracy") if k in r}
                for r in records
                if "reward" in r
            ],
        },
        "rlhf_seconds": round(reward_s + rloo_s, 1),
    }
    print(json.dumps(payload, indent=2))
    write_result("rlhf", payload)


if __name__ == "__main__":
    main()
