"""PPO's rollout loop: collect at one width, update every sampled width from the rollout.

Each update collects ``env.num_envs x ppo.rollout_steps`` steps, then
:func:`~usnet.tasks.rl.ppo.update` trains the sampled widths with the shared sandwich step. The
optimizer, the learning-rate schedule (stepped once per update) and the resume state
(:class:`~usnet.training.resume.ResumeState`) are the ones every task uses. The run folder
(``output.dir``) holds ``checkpoint/``, ``resume.pt`` and ``log.jsonl``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ...checkpoint import save
from ...config import to_dict
from ...config.widths import check_model_widths
from ...models.checked import build_from_config
from ...nn import width_space
from ...training.distributed import pick_device
from ...training.optim import create_optimizer, create_scheduler
from ...training.resume import (
    CHECKPOINT,
    ResumeState,
    check_run_folder,
    clear_run_folder,
    hold_run_folder,
)
from .config import RLConfig
from .envs import make_vector_env, model_kwargs
from .ppo import Collector, update

#: Episodes whose mean return the log reports (the training curve).
RECENT = 20


def build_model(cfg: RLConfig) -> nn.Module:
    """The actor-critic for ``cfg.env.id``: shapes from the environment, options from the config."""
    auto, shape = model_kwargs(cfg.env.id)
    kwargs = {**shape, "env_id": cfg.env.id, **cfg.model.kwargs}
    return build_from_config(cfg.model.name or auto, kwargs)


def _env_seed(cfg: RLConfig, update_index: int) -> int:
    """Training envs are seeded ``seed * 1000 + k`` per (re)start; evaluation uses other seeds."""
    return cfg.train.seed * 1000 + update_index


def train(
    cfg: RLConfig,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = tqdm.write,
) -> nn.Module:
    """Train for ``train.total_steps`` environment steps; returns the agent.

    ``device`` overrides ``train.device``; ``resume`` continues from ``output.dir/resume.pt``;
    a folder that holds a run is refused unless ``resume`` or ``overwrite``.
    """
    out, tc = Path(cfg.output.dir), cfg.train
    check_run_folder(out, resume, overwrite)
    if tc.threads:
        torch.set_num_threads(tc.threads)  # tiny networks: more threads only add overhead
    dev = pick_device(device or tc.device)
    torch.manual_seed(tc.seed)
    model = build_model(cfg).to(dev)
    space = width_space(model)
    rollout_width = tc.rollout_width or space.width_max
    check_model_widths(
        model,
        {
            "train.widths": tc.widths or [],
            "train.rollout_width": [rollout_width],
            "eval.widths": cfg.eval.grid,
        },
    )
    with hold_run_folder(out):
        check_run_folder(out, resume, overwrite)  # again: now no other process can start
        return _train(cfg, model, resume, dev, progress, overwrite, log)


def _train(
    cfg: RLConfig,
    model: nn.Module,
    resume: bool,
    dev: torch.device,
    progress: bool,
    overwrite: bool,
    log: Callable[[str], None],
) -> nn.Module:
    out, tc = Path(cfg.output.dir), cfg.train
    space = width_space(model)
    rollout_width = tc.rollout_width or space.width_max
    optimizer = create_optimizer(cfg.optim, model)
    scheduler = create_scheduler(cfg.schedule, optimizer, 1, cfg.num_updates)
    generator = torch.Generator().manual_seed(tc.seed)  # widths and minibatches
    actions = torch.Generator().manual_seed(_env_seed(cfg, 0))
    config = to_dict(cfg)
    gens = {"widths": generator, "actions": actions}
    state = ResumeState(out, model, optimizer, scheduler, None, gens, config)
    start, step = 0, 0
    if resume:
        counters, _ = state.load(log)
        start, step = int(counters["update"]), int(counters["step"])
        log(f"resumed from {state.path} at update {start} ({step} steps)")
    envs = make_vector_env(cfg.env.id, cfg.env.num_envs)
    if overwrite:  # only now: the model, optimizer and environments are all valid
        clear_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    collector = Collector(envs, _env_seed(cfg, start), generator=actions)
    bar = tqdm(total=cfg.num_updates, initial=start, desc="updates", disable=not progress)
    t0, logged = time.time(), 0
    try:
        for k in range(start, cfg.num_updates):
            rollout = collector.collect(
                model,
                cfg.ppo.rollout_steps,
                rollout_width,
                cfg.ppo.gamma,
                cfg.ppo.reward_clip,
                cfg.ppo.reward_scale,
            )
            step += cfg.batch_size
            stats = update(model, optimizer, rollout, cfg.ppo, tc, generator)
            scheduler.step()
            done = k + 1
            recent = [r for r, _ in collector.episodes[-RECENT:]]
            mean = sum(recent) / len(recent) if recent else float("nan")
            bar.set_postfix(ret=f"{mean:.1f}", loss=f"{stats['max/loss']:.3f}")
            bar.update(1)
            if done % tc.log_every == 0 or done == cfg.num_updates:
                record = {"update": done, "step": step, "return": mean, **stats}
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                fps = (step - logged) / max(time.time() - t0, 1e-9) if logged else None
                log(
                    f"update {done}/{cfg.num_updates} step {step} return {mean:.1f} "
                    f"loss(max) {stats['max/loss']:.3f} loss(min) {stats['min/loss']:.3f}"
                    + (f" {fps:.0f} steps/s" if fps else "")
                )
                t0, logged = time.time(), step
            if done % tc.checkpoint_every == 0 or done == cfg.num_updates:
                meta = {"task": "rl", "config": config, "update": done, "step": step}
                save(model, out / CHECKPOINT, meta=meta)
                state.save({"update": done, "step": step})  # after the checkpoint, paired
    finally:
        bar.close()
        envs.close()
    return model
