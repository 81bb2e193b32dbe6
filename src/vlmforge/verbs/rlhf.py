"""The RLHF methods of `vlmforge align` (LLaVA-RLHF, Sun et al. 2023): ``reward_model`` trains a reward
model on the preference pairs, ``rloo`` trains the policy against a reward run's model. What the align
verb builds and evaluates differently for them lives here; the run layout is the align verb's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmforge.config.schema import AlignRecipe
from vlmforge.errors import UserError
from vlmforge.storage import WEIGHTS, is_completed

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
        module = RlooModule(recipe, vocab, settings, tokens, source.weights, scorer, tokenizer, val)
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
