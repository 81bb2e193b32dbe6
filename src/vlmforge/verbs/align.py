"""`vlmforge align`: preference-tune (DPO / IPO) a finetuned LLaVA, or train a reward model on the pairs
and a policy against it (RLHF: ``method: reward_model`` then ``method: rloo``), top to bottom.

finetune run (its last stage's weights, tokenizer, model section) -> plan -> run dir -> preference pairs
-> the method's module (policy + frozen reference; reward model; policy + reference + a reward run's
model) -> Trainer.fit (resumable, SIGTERM-safe) -> plain weights -> evaluation on the held-out pairs (VQA
on the chosen answers, reward accuracy and margin; a reward model's pairwise accuracy; an RLOO policy's
reward gain and KL).

Run directory: the pretrain layout (``recipe.yaml`` with the run's model section and the resolved
``from_run``, ``plan.json``, ``manifest.json``, ``checkpoints/``, ``metrics.jsonl``, ``actual.json``,
``result.json``, ``eval/``, ``plots/``, ``logs/`` of the recipe's loggers) plus ``tokenizer/`` (the
finetune run's), ``model.safetensors``, its transformers ``config.json`` (not for a reward model, whose
weights hold a scalar head as well) and ``training.json`` (the training outcome, so that a resumed run
whose training finished only evaluates).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmforge.config.schema import AlignRecipe
from vlmforge.errors import UserError, raise_all
from vlmforge.runs.artifacts import llava_model, stage_completed, with_source_model
from vlmforge.runs.directory import manifest
from vlmforge.runs.lifecycle import RunResult, is_launched_worker, records_disk_full, start_run
from vlmforge.storage import WEIGHTS, is_completed, read_json, write_json

TRAINING = "training.json"  # the training outcome; result.json is written once evaluation is done too


@records_disk_full
def run(
    recipe: AlignRecipe, resume: str = "never", confirm: Callable[[str], bool] | None = None
) -> RunResult | None:
    """Align; returns the result on global rank 0 and ``None`` on the other ranks."""
    import torch

    from vlmforge.data.conversations import IMAGE, load_tokenizer, save_tokenizer
    from vlmforge.data.preferences import split_preferences
    from vlmforge.evaluate.preference import PreferenceReference
    from vlmforge.evaluate.results import EvalResult, without_item_lists
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.models.llava import vocab_size_for, write_run_config
    from vlmforge.runs.preflight import preflight
    from vlmforge.training.fit import fit_to_weights
    from vlmforge.training.module import FitSettings

    raise_all(preflight(recipe))
    recipe, source = with_source_model(recipe)
    cfg = recipe.model
    assert cfg is not None
    train, val = split_preferences(recipe.data, cfg.vision.image_size)
    if len(train) < recipe.batch_size:
        raise UserError(
            f"data: {len(train)} training pairs cannot fill one batch of batch_size={recipe.batch_size}",
            hint="lower batch_size or add data",
        )
    if recipe.rloo is not None:
        reward_run(recipe.rloo.reward_run)  # a wrong reward run stops before a run directory exists
    run_dir, point = start_run(recipe, resume, confirm)

    tokenizer = load_tokenizer(source.run_dir / "tokenizer")
    vocab = vocab_size_for(cfg, tokenizer)
    tokens = (int(tokenizer.convert_tokens_to_ids(IMAGE)), int(tokenizer.pad_token_id))
    if not is_launched_worker():
        save_tokenizer(tokenizer, run_dir / "tokenizer")
        if recipe.method != "reward_model":
            write_run_config(run_dir, cfg, vocab, tokens[0])  # transformers' config of model.safetensors
        devices = {"accelerator": recipe.train.accelerator, "world_size": recipe.world_size}
        write_json(run_dir / "manifest.json", manifest(recipe.seed, train.images.fingerprint, devices))

    if stage_completed(run_dir, TRAINING):  # trained earlier; only the evaluation is left
        outcome = read_json(run_dir / TRAINING)
    else:
        batch = recipe.batch_plan(len(train))
        settings = FitSettings(batch, recipe.optim, recipe.data.num_workers)
        module = build_module(recipe, vocab, settings, tokens, source, (tokenizer, train, val))
        resume_from = point.checkpoint if point else None
        note = f" from {resume_from}" if resume_from else f" from {source.run_dir}"
        outcome = fit_to_weights(
            recipe,
            module,
            run_dir,
            batch,
            recipe.name,
            f"{announcement(recipe)}, {recipe.trainable}, {batch.max_steps} steps{note}",
            resume_from,
            TRAINING,
        )
    if is_launched_worker():
        return None
    metrics: dict[str, Any] = {"train": outcome.get("metrics", {}), "data": train.tally.to_json()}
    status = outcome["status"]
    stopped_at = Path(outcome["checkpoint"]) if outcome.get("checkpoint") else None
    weights = run_dir / WEIGHTS if status == "completed" else stopped_at
    if "stopped" in outcome:
        metrics["stopped"] = outcome["stopped"]
    if status == "completed" and recipe.method != "dpo" and len(val) > 0:
        assert weights is not None
        evaluated = evaluate_rlhf(recipe, tokenizer, weights, source, val)
        EvalResult(run_dir, weights, val.name, evaluated).write()
        metrics["eval"] = without_item_lists(evaluated)
    elif status == "completed" and recipe.eval and len(val) > 0:
        assert weights is not None
        policy = llava_model(cfg, tokenizer, weights)
        reference = PreferenceReference(llava_model(cfg, tokenizer, source.weights), recipe.dpo.beta)
        with torch.no_grad():
            evaluated = evaluate_model(
                cfg, policy, tokenizer, cfg.max_text_tokens, val, list(recipe.eval), reference=reference
            )
        EvalResult(run_dir, weights, val.name, evaluated).write()
        metrics["eval"] = without_item_lists(evaluated)
    resumed_from = point.checkpoint if point else None
    result = RunResult(run_dir, status, outcome.get("steps", 0), weights, resumed_from, metrics)
    result.write()
    return result


# ------------------------------------------------------------------ RLHF: reward_model and rloo
REWARD_EVAL = "reward"  # result.json's metrics.eval key (and eval/reward.json) of a reward run
GAIN_EVAL = "rloo"  # ... of an RLOO run's reward gain and KL


def reward_run(path: Path) -> Path:
    """``rloo.reward_run``: a reward run directory, or a folder of runs whose newest completed one."""
    from vlmforge.config.load import load_recipe
    from vlmforge.runs.artifacts import run_verb

    if path.is_dir() and not (path / "recipe.yaml").is_file():
        runs = sorted(p for p in path.iterdir() if p.is_dir() and is_completed(p))
        path = runs[-1] if runs else path
    is_align = (path / "recipe.yaml").is_file() and run_verb(path) == "align"
    recipe = load_recipe("align", path / "recipe.yaml") if is_align else None
    if (
        not isinstance(recipe, AlignRecipe)
        or recipe.method != "reward_model"
        or not (path / WEIGHTS).is_file()
    ):
        raise UserError(
            f"rloo.reward_run: {path} is not a completed `method: reward_model` align run",
            hint="train one first (e.g. `vlmforge align -c debug/llava-reward-tiny`) and point "
            "rloo.reward_run at it",
        )
    return path


def load_scorer(path: Path) -> Any:
    """The frozen reward model of a reward run, ready to score answers (``RewardScorer``)."""
    from vlmforge.config.load import load_recipe
    from vlmforge.data.conversations import IMAGE, load_tokenizer
    from vlmforge.models.llava import build_model, vocab_size_for
    from vlmforge.models.reward import load_reward_model
    from vlmforge.training.rloo import RewardScorer

    run_dir = reward_run(path)
    recipe = load_recipe("align", run_dir / "recipe.yaml")
    assert isinstance(recipe, AlignRecipe) and recipe.model is not None  # the run saved its model section
    cfg = recipe.model.without_pretrained()
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    image_id = int(tokenizer.convert_tokens_to_ids(IMAGE))
    llava = build_model(cfg, vocab_size_for(cfg, tokenizer), image_id=image_id)
    model = load_reward_model(llava, run_dir / WEIGHTS, int(tokenizer.eos_token_id))
    shape = (cfg.image_tokens, image_id, cfg.max_text_tokens)
    return RewardScorer(model, tokenizer, shape, recipe.reward.facts)


def reward_pairs(recipe: AlignRecipe, pairs: Any) -> Any:
    """The pairs as the reward model reads them: with their facts in the prompts under reward.facts."""
    return pairs.with_facts() if recipe.reward.facts else pairs


def build_module(
    recipe: AlignRecipe, vocab: int, settings: Any, tokens: tuple[int, int], source: Any, data: Any
) -> Any:
    """The LightningModule of ``recipe.method`` with its training data; ``data`` holds the tokenizer, the
    training and the held-out pairs."""
    from vlmforge.data.preferences import PreferenceSamples
    from vlmforge.data.rollouts import PromptSamples
    from vlmforge.training.align import AlignModule
    from vlmforge.training.reward import RewardModule
    from vlmforge.training.rloo import RlooModule

    cfg = recipe.model
    assert cfg is not None
    tokenizer, train, val = data
    if recipe.method == "rloo":
        assert recipe.rloo is not None
        scorer = load_scorer(recipe.rloo.reward_run)
        accuracy = functools.partial(heldout_vqa_accuracy, tokenizer=tokenizer, pairs=val, rloo=recipe.rloo)
        module = RlooModule(recipe, vocab, settings, tokens, source.weights, scorer, tokenizer, accuracy)
        module.train_data = PromptSamples(train, tokenizer, cfg.image_tokens, tokens[0])
        return module
    if recipe.method == "reward_model":
        module = RewardModule(recipe, vocab, settings, tokens, source.weights, int(tokenizer.eos_token_id))
        train = reward_pairs(recipe, train)
    else:
        module = AlignModule(recipe, vocab, settings, tokens, source.weights)
    module.train_data = PreferenceSamples(train, tokenizer, cfg.image_tokens, tokens[0], cfg.max_text_tokens)
    return module


def announcement(recipe: AlignRecipe) -> str:
    """What the fit trains, for the line printed before it starts."""
    if recipe.method == "reward_model":
        return f"align: reward model (Bradley-Terry{', fact-augmented' if recipe.reward.facts else ''})"
    if recipe.rloo is not None:
        rloo = recipe.rloo
        return (
            f"align: RLOO (k {rloo.samples_per_prompt}, KL coef {rloo.kl_coef:g}) against {rloo.reward_run}"
        )
    return f"align: {recipe.dpo.loss} (beta {recipe.dpo.beta:g})"


def evaluate_rlhf(
    recipe: AlignRecipe, tokenizer: Any, weights: Path, source: Any, val: Any
) -> dict[str, Any]:
    """Held-out metrics of a reward run (pairwise accuracy) or of an RLOO run (reward gain over the
    start and KL, then the recipe's VQA tasks)."""
    import torch

    from vlmforge.evaluate.rlhf import pairwise_accuracy, policy_gain
    from vlmforge.evaluate.tasks import evaluate_model
    from vlmforge.models.reward import load_reward_model
    from vlmforge.runs.artifacts import llava_model

    cfg = recipe.model
    assert cfg is not None
    if recipe.method == "reward_model":
        eos = int(tokenizer.eos_token_id)
        reward = load_reward_model(llava_model(cfg, tokenizer, source.weights), weights, eos)
        return {
            REWARD_EVAL: pairwise_accuracy(reward, reward_pairs(recipe, val), tokenizer, cfg.max_text_tokens)
        }
    assert recipe.rloo is not None
    policy, start = llava_model(cfg, tokenizer, weights), llava_model(cfg, tokenizer, source.weights)
    scorer = load_scorer(recipe.rloo.reward_run)
    gain = policy_gain(start, policy, scorer, val, tokenizer, recipe.rloo, recipe.seed)
    with torch.no_grad():
        tasks = evaluate_model(cfg, policy, tokenizer, cfg.max_text_tokens, val, list(recipe.eval))
    return {GAIN_EVAL: gain} | tasks


def heldout_vqa_accuracy(model: Any, tokenizer: Any, pairs: Any, rloo: Any) -> float:
    """VQA accuracy of the policy's greedy answers on the first ``rloo.eval_samples`` held-out pairs."""
    from vlmforge.evaluate.vqa import answer
    from vlmforge.evaluate.vqa_accuracy import vqa_score

    count = min(len(pairs), rloo.eval_samples)
    if count == 0:
        return float("nan")
    turns = [pairs.turns(i) for i in range(count)]
    images = [pairs.image(i) for i in range(count)]
    predicted = answer(model, tokenizer, [t[0][1] for t in turns], images, rloo.max_new_tokens)
    return float(vqa_score(predicted, [[t[1][1]] for t in turns])["accuracy"])
