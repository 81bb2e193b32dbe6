"""Training runs under hostile input and faults: non-finite numbers and losses, a second process on one
run, broken recipe files, sizes the machine cannot hold, signals, wrong verbs, files that would be
overwritten. Each case runs the real CLI and checks the exit code, the message, the absence of a
traceback and what is (not) on disk afterwards."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import DEBUG_RECIPE, REPO, last_json, run_cli, start_cli
from tests.hostile.checks import files_under, leftovers, no_traceback

QUICK = ["data.batch_size=32", "train.log_every_steps=1", "eval=[]"]
LONG = [*QUICK, "train.max_steps=100000", "train.log_every_steps=1000", "train.checkpoint.every_steps=5"]


def strict_json(text: str) -> Any:
    """Parse JSON as strict parsers do: bare NaN / Infinity are errors."""

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def refused(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, a message naming each needle, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr[-3000:])


# ----------------------------------------------------------------------------- recipes themselves
def test_non_finite_numbers_are_refused_in_overrides_and_files(tmp_path: Path) -> None:
    refused(run_cli("validate", "-c", str(DEBUG_RECIPE), "optim.lr=inf", cwd=tmp_path), "optim.lr")
    import yaml

    data = yaml.safe_load(DEBUG_RECIPE.read_text(encoding="utf-8"))
    data.setdefault("optim", {})["lr"] = "LR"
    recipe = tmp_path / "inf.yaml"
    recipe.write_text(yaml.safe_dump(data).replace("lr: LR", "lr: 1e309"), encoding="utf-8")
    refused(run_cli("validate", "-c", str(recipe), cwd=tmp_path), "optim.lr")


def test_a_recipe_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    recipe = tmp_path / "latin1.yaml"
    recipe.write_bytes(b"name: caf\xe9\n")
    refused(run_cli("validate", "-c", str(recipe), cwd=tmp_path), "latin1.yaml", "not UTF-8", "byte 9")


def test_an_out_of_range_seed_is_refused_before_a_run_dir_exists(tmp_path: Path) -> None:
    proc = run_cli("pretrain", "-c", str(DEBUG_RECIPE), "seed=99999999999999999999999", cwd=tmp_path)
    refused(proc, "seed")
    assert not (tmp_path / "runs").exists()


def test_a_yaml_alias_bomb_is_refused_by_every_reader(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(DEBUG_RECIPE.read_text(encoding="utf-8"))
    data["train"]["strategy"] = {"kind": "deepspeed", "overrides": "BOMB"}
    text = yaml.safe_dump(data, sort_keys=False)
    line = next(line for line in text.splitlines() if line.strip() == "overrides: BOMB")
    indent = " " * (len(line) - len(line.lstrip()) + 2)
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values
    text = text.replace(line, line.replace(" BOMB", "") + "".join(f"\n{indent}{lvl}" for lvl in levels))
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(text, encoding="utf-8")
    for args in (["validate"], ["pretrain", "--print-config"], ["pretrain", "--emit", "deepspeed-config"]):
        started = time.monotonic()
        proc = run_cli(*args, "-c", str(recipe), cwd=tmp_path, timeout=120)
        refused(proc, "bomb.yaml", "aliases expand to more than")
        assert time.monotonic() - started < 60  # refused when read, not after expanding 10^9 values
    assert files_under(tmp_path) == {"bomb.yaml"}


def test_a_recipe_run_with_the_wrong_verb_names_its_verb(tmp_path: Path) -> None:
    proc = run_cli("finetune", "-c", str(DEBUG_RECIPE), cwd=tmp_path)
    refused(proc, "is a pretrain recipe", "vlmforge pretrain -c")
    listed = strict_json(run_cli("recipes", "ls", "--format", "json", cwd=tmp_path, check=True).stdout)
    assert listed["verbs"]["debug/clip-tiny"] == "pretrain"
    assert listed["verbs"]["debug/llava-tiny"] == "finetune"
    assert set(listed["verbs"]) == set(listed["recipes"])


# -------------------------------------------------------------------------- before anything starts
def test_sizes_the_machine_cannot_hold_are_refused_with_the_numbers(tmp_path: Path) -> None:
    huge = ["model.vision.image_size=4000", "model.vision.patch_size=8"]  # data stays at 16
    proc = run_cli("pretrain", "-c", str(DEBUG_RECIPE), *huge, cwd=tmp_path)
    refused(proc, "model expects 4000", "GB per process", "activations", "plan.check_memory=false")
    digits = ["model.vision.image_size=1024", "model.vision.patch_size=32", "data.image_size=1024"]
    proc = run_cli("pretrain", "-c", str(DEBUG_RECIPE), *digits, cwd=tmp_path)
    refused(proc, "GB")
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_validate_reports_every_problem_the_run_would_stop_on(tmp_path: Path) -> None:
    args = ["model.vision.image_size=32", f"model.pretrained={tmp_path / 'missing.pt'}"]
    proc = run_cli("validate", "-c", str(DEBUG_RECIPE), *args, cwd=tmp_path)
    refused(proc, "data.image_size is 16 but the model expects 32", "missing.pt")
    assert run_cli("validate", "--schema-only", "-c", str(DEBUG_RECIPE), *args, cwd=tmp_path).returncode == 0
    trained = run_cli("pretrain", "-c", str(DEBUG_RECIPE), "model.vision.image_size=32", cwd=tmp_path)
    refused(trained, "data.image_size is 16 but the model expects 32")
    assert not (tmp_path / "runs").exists()


def test_emitted_files_are_not_overwritten_without_force(tmp_path: Path) -> None:
    target = tmp_path / "job.sh"
    emit = ["pretrain", "-c", str(DEBUG_RECIPE), "--emit-launch", "torchrun", "--launch-file", str(target)]
    run_cli(*emit, cwd=tmp_path, check=True)
    target.write_text("# my edits\n", encoding="utf-8")
    refused(run_cli(*emit, cwd=tmp_path), "would overwrite", "--force")
    assert target.read_text(encoding="utf-8") == "# my edits\n"
    run_cli(*emit, "--force", cwd=tmp_path, check=True)
    assert "torchrun" in target.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------ during a run
def test_a_diverging_run_stops_before_the_bad_update_with_its_last_finite_step(tmp_path: Path) -> None:
    args = [*QUICK, "optim.lr=1e30", "optim.warmup_steps=0", "train.max_steps=6"]
    proc = run_cli("pretrain", "-c", str(DEBUG_RECIPE), *args, "--format", "json", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr[-3000:]
    no_traceback(proc.stderr)
    assert "diverged" in proc.stderr and "NaN or infinite" in proc.stderr
    printed = strict_json(proc.stdout.strip().splitlines()[-1])
    run_dir = tmp_path / printed["run_dir"]
    result = strict_json((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["status"] == "diverged"
    stopped = result["metrics"]["stopped"]
    assert stopped["saved_step"] == result["steps"] == stopped["step"] - 1
    checkpoint = run_dir / result["checkpoint"]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["global_step"] == result["steps"]
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())
    lines = [strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "stopped: non-finite loss"
    assert leftovers(run_dir) == []


def _started_until_a_checkpoint(cwd: Path) -> subprocess.Popen[str]:
    """A long pretrain run started in ``cwd``, once it has written its first checkpoint."""
    proc = start_cli("pretrain", "-c", str(DEBUG_RECIPE), *LONG, "--format", "json", cwd=cwd)
    deadline = time.monotonic() + 300
    while not list((cwd / "runs").glob("clip-tiny/*/checkpoints/step-*.ckpt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    return proc


def _git_repo(path: Path) -> str:
    path.mkdir()
    for command in (["init", "-q"], ["commit", "-q", "--allow-empty", "-m", "project"]):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *command], cwd=path, check=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True
    ).stdout.strip()


def _lock_of(pid: int) -> dict[str, Any]:
    from vlmforge.runs.lock import process_start

    return {"host": socket.gethostname(), "pid": pid, "started": process_start(pid), "since": "now"}


def test_ctrl_c_saves_and_a_locked_run_is_not_trained_twice(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project_sha = _git_repo(project)
    proc = _started_until_a_checkpoint(project)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    no_traceback(stderr)
    assert "Ctrl-C" in stderr and "--resume" in stderr
    result = last_json(stdout)
    run_dir = project / result["run_dir"]
    assert result["status"] == "interrupted"
    assert (run_dir / "checkpoints" / f"step-{result['steps']:08d}.ckpt").is_file()
    assert strict_json((run_dir / "result.json").read_text())["checkpoint"] == (
        f"checkpoints/step-{result['steps']:08d}.ckpt"
    )
    manifest = json.loads((run_dir / "manifest.json").read_text())
    vlmforge_sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert manifest["git_sha"].removesuffix("-dirty") == vlmforge_sha.stdout.strip()
    assert manifest["workdir_git_sha"].removesuffix("-dirty") == project_sha
    assert not (run_dir / ".lock").exists()  # released at exit

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        (run_dir / ".lock").write_text(json.dumps(_lock_of(holder.pid)))
        before = files_under(run_dir), (run_dir / "recipe.yaml").stat().st_mtime_ns
        second = run_cli("pretrain", "-c", str(DEBUG_RECIPE), *LONG, "--resume", "auto", cwd=project)
        refused(second, "being trained by another process", f"pid {holder.pid}")
        assert (files_under(run_dir), (run_dir / "recipe.yaml").stat().st_mtime_ns) == before
    finally:
        holder.kill()
        holder.wait()
    finish = [*QUICK, f"train.max_steps={result['steps'] + 2}", "train.checkpoint.every_steps=5"]
    resumed = run_cli("pretrain", "-c", str(DEBUG_RECIPE), *finish, "--resume", "auto", cwd=project)
    assert resumed.returncode == 0, resumed.stderr[-3000:]  # the stale lock of a dead process is taken over
    assert json.loads((run_dir / "result.json").read_text())["status"] == "completed"
    assert not (run_dir / ".lock").exists()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX signals")
def test_sigterm_result_names_the_checkpoint_it_saved(tmp_path: Path) -> None:
    proc = _started_until_a_checkpoint(tmp_path)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    result = last_json(stdout)
    run_dir = tmp_path / result["run_dir"]
    named = strict_json((run_dir / "result.json").read_text())["checkpoint"]
    assert named is not None and (run_dir / named).is_file() and str(result["steps"]) in named
