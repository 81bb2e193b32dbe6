"""One rank of raw DeepSpeed runs (started by torchrun from tests/test_strategies.py).

For each DeepSpeed JSON config that vlmforge generated, trains the debug recipe's tiny CLIP on its digits
data with ``deepspeed.initialize(config=...)`` for a few steps, saves a ZeRO checkpoint and gathers it
with vlmforge's reader, then writes what the test checks: the loss of every step, how parameters and
optimizer states were split across ranks, and how far the gathered weights are from the live ones.

usage: torchrun --nproc-per-node N tests/deepspeed_worker.py RECIPE OUT_DIR CONFIG.json [CONFIG.json ...]
(RECIPE: a resolved pretrain recipe for N devices, the one the configs were generated from)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import deepspeed
import torch
from open_clip.loss import ClipLoss

from vlmforge.config.load import load_recipe
from vlmforge.config.schema import PretrainRecipe
from vlmforge.data.loader import CaptionedImages, GlobalBatchSampler, collate
from vlmforge.data.sources import train_val_split
from vlmforge.data.tokenizers import build_tokenizer
from vlmforge.families import family_for
from vlmforge.training.sharding import clamp_parameter_, promote_scalar_parameters, zero_checkpoint_state

# below the initial log(1/0.07) = 2.66, so the clamp acts from the first step on
LOGIT_SCALE_CAP = 2.5


def train(recipe: PretrainRecipe, config: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    torch.manual_seed(recipe.seed)
    train_set, _ = train_val_split(recipe.data)
    tokenizer = build_tokenizer(recipe.model.tokenizer, train_set.all_captions())
    models = family_for(recipe.model).models
    model = models.build_model(recipe.model, tokenizer.vocab_size)
    promote_scalar_parameters(model)  # as the training module does: ZeRO cannot broadcast 0-d parameters
    total_params = sum(p.numel() for p in model.parameters())
    data = CaptionedImages(train_set, tokenizer, models.context_length(recipe.model, model), recipe.seed)
    sampler = GlobalBatchSampler(
        len(data), recipe.data.batch_size, recipe.batch_plan().micro_batch, rank=rank, world_size=world
    )
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, collate_fn=collate)  # type: ignore[arg-type]

    optim = recipe.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    objective = ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world)

    losses = []
    micro_batches = iter(loader)
    for _ in range(recipe.train.max_steps):
        for _ in range(engine.gradient_accumulation_steps()):
            batch = next(micro_batches)
            image_features, text_features, logit_scale = engine(batch["image"], batch["text"])
            loss = objective(image_features, text_features, logit_scale)
            engine.backward(loss)
            engine.step()
            if engine.is_gradient_accumulation_boundary():  # as ContrastiveModule does, with a low cap
                clamp_parameter_(engine.module.logit_scale, 0, LOGIT_SCALE_CAP)
        mean = loss.detach().clone()
        torch.distributed.all_reduce(mean)
        losses.append(mean.item() / world)

    stage = engine.zero_optimization_stage()
    if stage == 3:  # between forward passes each parameter keeps only its partition (ds_tensor)
        local = sum(p.ds_tensor.numel() for p in engine.module.parameters())
    else:  # ZeRO-2: whole weights; the fp32 master weights and Adam moments are partitioned
        local = sum(part.numel() for part in engine.optimizer.single_partition_of_fp32_groups)
    resident = sum(p.numel() for p in engine.module.parameters())

    # the final-weights path of a sharded run: DeepSpeed's checkpoint folder gathered into one state dict
    folder = out_dir / f"zero{stage}"
    engine.save_checkpoint(str(folder), tag="checkpoint")
    torch.distributed.barrier()
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), enabled=stage == 3):
        live = {name: p.detach().clone() for name, p in engine.module.named_parameters()}
    logit_scale = live["logit_scale"].item()
    gathered_error = None
    if rank == 0:
        saved = zero_checkpoint_state(folder)
        assert saved.keys() == live.keys(), saved.keys() ^ live.keys()
        gathered_error = max((saved[k].detach() - live[k]).abs().max().item() for k in live)
    return {
        "rank": rank,
        "world": world,
        "stage": stage,
        "losses": losses,
        "total_params": total_params,
        "local_partition": local,
        "resident_params": resident,
        "accelerator": deepspeed.get_accelerator().device_name(),
        "gathered_weights_max_error": gathered_error,
        "logit_scale": logit_scale,
        "logit_scale_cap": LOGIT_SCALE_CAP,
    }


def main() -> None:
    recipe_path, out_dir, *config_paths = sys.argv[1:]
    deepspeed.init_distributed(dist_backend="gloo")
    recipe = load_recipe("pretrain", Path(recipe_path), [])
    assert recipe.world_size == torch.distributed.get_world_size()
    for config_path in config_paths:
        config = json.loads(Path(config_path).read_text())
        report = train(recipe, config, Path(out_dir))
        name = f"{Path(config_path).stem}-rank{report['rank']}.json"
        (Path(out_dir) / name).write_text(json.dumps(report))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
