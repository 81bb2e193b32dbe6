"""DPO against RLHF (a reward model, then RLOO) on the same digits preference pairs (every image with
all nine wrong digits rejected), from the same tiny finetuned LLaVA: held-out VQA accuracy before and
after, the reward model's held-out pairwise and image accuracy (the right digit above all nine wrong
ones), the RL step's reward gain over the start and its KL, and the wall-clock and CPU seconds of each
`vlmforge align` run (one process each, as a user runs them; training seconds from each run's
actual.json). DPO and the reward model do not depend on each other and run side by side; RLOO follows
the reward model. On a shared machine wall-clock follows the load.

    python benchmarks/rlhf.py [--workdir DIR] [--from-run FINETUNE_RUN] [--reward-run REWARD_RUN]

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
ALL_WRONG = "data.rejected=9"  # one wrong digit per image teaches a reward model to beat that one only
# lr 1e-2 with one wrong digit per image ends at held-out VQA 0.000: DPO lowers both answers and moves
# the mass to words in no pair; RPO's NLL term on the chosen answer and a 10x lower rate keep it a digit
DPO_OVERRIDES = (ALL_WRONG, "optim.lr=1e-3", "dpo.nll_weight=1.0")
REWARD_OVERRIDES = (ALL_WRONG,)
RLOO_OVERRIDES = ("rloo.samples_per_prompt=8", "optim.lr=3e-3", "max_steps=30")


def start(cwd: Path, *args: str) -> tuple[subprocess.Popen[str], float]:
    """Start `vlmforge ... --format json` (its output in files under ``cwd``)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{REPO / 'src'}:{REPO / 'cli'}"}
    name = f"{len(list(cwd.glob('*.out')))}-{args[0]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmforge_cli", *args, "--format", "json"],
        cwd=cwd,
        env=env,
        stdout=(cwd / f"{name}.out").open("w"),
        stderr=(cwd / f"{name}.err").open("w"),
        text=True,
    )
    proc.name = name  # type: ignore[attr-defined]
    return proc, time.perf_counter()


def finish(cwd: Path, proc: subprocess.Popen[str], started: float) -> tuple[dict[str, Any], dict[str, float]]:
    """The run's result and its wall-clock and CPU (user + system) seconds."""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = {
        "wall_s": round(time.perf_counter() - started, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
    }
    name = proc.name  # type: ignore[attr-defined]
    if status:
        raise SystemExit((cwd / f"{name}.err").read_text()[-3000:])
    return json.loads((cwd / f"{name}.out").read_text().strip().splitlines()[-1]), seconds


def cli(cwd: Path, *args: str) -> tuple[dict[str, Any], dict[str, float]]:
    return finish(cwd, *start(cwd, *args))


def train_seconds(run_dir: Path) -> float:
    """The run's own training wall-clock (``actual.json``), without start-up and evaluation."""
    return float(json.loads((run_dir / "actual.json").read_text())["wall_seconds"])


def start_accuracy(run_dir: Path) -> float:
    """Held-out VQA accuracy of the finetuned model itself on the preference pairs' held-out split."""
    from vlmforge.config.schema import DigitsPreferences, VqaTask
    from vlmforge.data.preferences import split_preferences
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.runs.artifacts import load_finetuned

    model, tokenizer, recipe, _ = load_finetuned(run_dir)
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
    parser.add_argument(
        "--from-run", type=Path, default=None, help="a finished debug/llava-tiny finetune run"
    )
    parser.add_argument(
        "--reward-run",
        type=Path,
        default=None,
        help="a finished reward run of --from-run with REWARD_OVERRIDES, reused instead of trained",
    )
    args = parser.parse_args()
    work = (args.workdir or Path(tempfile.mkdtemp(prefix="vlmforge-rlhf-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.from_run is None:
        finetuned, finetune_s = cli(work, "finetune", "-c", str(RECIPES / "llava-tiny.yaml"), *FINETUNE_SHORT)
        start_dir = work / finetuned["run_dir"]
    else:
        start_dir, finetune_s = args.from_run.resolve(), {}
    source = f"from_run={start_dir}"
    vqa = "eval=[{kind: vqa, max_new_tokens: 4}]"
    dpo_job = start(work, "align", "-c", str(RECIPES / "llava-dpo-tiny.yaml"), source, vqa, *DPO_OVERRIDES)
    if args.reward_run is None:
        reward_job = start(
            work, "align", "-c", str(RECIPES / "llava-reward-tiny.yaml"), source, *REWARD_OVERRIDES
        )
        reward, reward_s = finish(work, *reward_job)
        reward_dir = work / reward["run_dir"]
    else:
        reward_dir = args.reward_run.resolve()
        reward, reward_s = json.loads((reward_dir / "result.json").read_text()), {"reused": True}
    reward_s["train_s"] = train_seconds(reward_dir)
    rloo_args = (source, f"rloo.reward_run={reward_dir}", *RLOO_OVERRIDES)
    rloo_job = start(work, "align", "-c", str(RECIPES / "llava-rloo-tiny.yaml"), *rloo_args)
    (dpo, dpo_s), (rloo, rloo_s) = finish(work, *dpo_job), finish(work, *rloo_job)
    dpo_s["train_s"], rloo_s["train_s"] = (train_seconds(work / r["run_dir"]) for r in (dpo, rloo))
    records = [json.loads(line) for line in (work / rloo["run_dir"] / "metrics.jsonl").open()]
    payload = {
        "setup": "debug/llava-tiny finetune (10 + 60 steps), then digits preference pairs with all nine "
        "wrong digits rejected per image (1437 train images: 12933 pairs; 360 held-out images: 3240 pairs)",
        "start": {"heldout_vqa_accuracy": start_accuracy(start_dir), "finetune": finetune_s},
        "dpo": {
            "recipe": "debug/llava-dpo-tiny",
            "overrides": list(DPO_OVERRIDES),
            "heldout_vqa_accuracy": dpo["metrics"]["eval"]["vqa"]["accuracy"],
            "time": dpo_s,
        },
        "reward_model": {
            "recipe": "debug/llava-reward-tiny",
            "overrides": list(REWARD_OVERRIDES),
            "facts": reward["metrics"]["eval"]["reward"],
            "time": reward_s,
        },
        "rloo": {
            "recipe": "debug/llava-rloo-tiny",
            "overrides": list(RLOO_OVERRIDES),
            "heldout_vqa_accuracy": rloo["metrics"]["eval"]["vqa"]["accuracy"],
            "heldout": rloo["metrics"]["eval"]["rloo"],
            "time": rloo_s,
            "log": [
                {k: r[k] for k in ("step", "reward", "kl", "answer_tokens", "heldout_vqa_accuracy") if k in r}
                for r in records
                if "reward" in r
            ],
        },
        "concurrent": "dpo ran beside the reward model (or, with --reward-run, beside rloo)",
    }
    print(json.dumps(payload, indent=2))
    write_result("rlhf", payload)


if __name__ == "__main__":
    main()
