"""An RL run: build the agent, PPO with the sandwich rule, checkpoints, the final spectrum.

``run(raw, overrides, resume)`` is what ``usnet train`` calls for a ``task: rl`` config. The run
folder (``out_dir``) holds ``checkpoint/`` (usnet.checkpoint: weights + usnet.json), ``resume.pt``
(optimizer, counters, RNG states; loaded with ``weights_only=True``), ``log.jsonl`` and, at
the end, ``spectrum.json`` / ``spectrum.md`` / ``spectrum.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import save
from ..config import build_config, to_dict
from ..devices import resolve_device
from ..models import create_model
from ..nn import width_space
from ..training.resume import CHECKPOINT, ResumeState, check_run_folder, clear_run_folder
from .config import RLConfig
from .envs import make_vector_env, model_kwargs
from .evaluate import format_table, plot, spectrum
from .ppo import Collector, update

#: Episodes whose mean return the log reports (the training curve).
RECENT = 20


def build_model(cfg: RLConfig) -> nn.Module:
    """The actor-critic for ``cfg.env.id``: shapes from the environment, options from the config."""
    auto, shape = model_kwargs(cfg.env.id)
    return create_model(cfg.model.name or auto, **shape, env_id=cfg.env.id, **cfg.model.kwargs)


def _env_seed(cfg: RLConfig, update_index: int) -> int:
    """Training envs are seeded ``seed * 1000 + k`` per (re)start; evaluation uses other seeds."""
    return cfg.seed * 1000 + update_index


def train(
    cfg: RLConfig,
    resume: bool = False,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> tuple[nn.Module, list[dict]]:
    """Train for ``cfg.ppo.total_steps`` environment steps; returns the agent and its spectrum."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # tiny networks: more threads only add overhead
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(cfg).to(device)
    out = Path(cfg.out_dir)
    check_run_folder(out, resume, overwrite)
    if overwrite:
        clear_run_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / CHECKPOINT
    space = width_space(model)
    rollout_width = cfg.train.rollout_width or space.width_max
    space.canonical(rollout_width)  # in range, or a clear error
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.ppo.lr, eps=1e-5)
    generator = torch.Generator().manual_seed(cfg.seed)
    actions = torch.Generator().manual_seed(_env_seed(cfg, 0))
    config_data = to_dict(cfg)
    state = ResumeState(
        out, model, optimizer, generators={"widths": generator, "actions": actions},
        config=config_data,
    )
    start, step = 0, 0
    if resume:
        counters, _ = state.load(log)
        start, step = int(counters["update"]), int(counters["step"])
        log(f"resumed from {state.path} at update {start} ({step} steps)")
    envs = make_vector_env(cfg.env.id, cfg.env.num_envs)
    collector = Collector(envs, _env_seed(cfg, start), generator=actions)
    t0, logged = time.time(), 0
    try:
        for k in range(start, cfg.num_updates):
            if cfg.ppo.anneal_lr:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.ppo.lr * (1.0 - k / cfg.num_updates)
            rollout = collector.collect(
                model,
                cfg.ppo.rollout_steps,
                rollout_width,
                cfg.ppo.gamma,
                cfg.ppo.reward_clip,
                cfg.ppo.reward_scale,
            )
            step += cfg.batch_size
            stats = update(model, optimizer, rollout, cfg.ppo, cfg.train, generator)
            done = k + 1
            if done % cfg.log_every == 0 or done == cfg.num_updates:
                recent = [r for r, _ in collector.episodes[-RECENT:]]
                mean = sum(recent) / len(recent) if recent else float("nan")
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
            if done % cfg.checkpoint_every == 0 or done == cfg.num_updates:
                meta = {"config": config_data, "update": done, "step": step, "task": "rl"}
                save(model, ckpt_dir, meta=meta)
                state.save({"update": done, "step": step})  # after the checkpoint, paired
    finally:
        envs.close()
    ev = cfg.eval
    rows = spectrum(model, ev.grid, cfg.env.id, ev.episodes, ev.seed, ev.greedy)
    return model, rows


def write_spectrum(rows: Sequence[dict], out: Path, title: str) -> None:
    """``spectrum.json``, a Markdown table and a plot of return against MACs."""
    (out / "spectrum.json").write_text(json.dumps(list(rows), indent=2) + "\n")
    (out / "spectrum.md").write_text(format_table(rows) + "\n")
    plot({title: rows}, out / "spectrum.png", title)


def run(raw: dict, overrides: Sequence[str] = (), resume: bool = False, source: str = "") -> int:
    """``usnet train`` for ``task: rl``: validate the config, train, print the spectrum.

    ``source`` (the YAML file's name) only makes config errors name the file.
    """
    cfg = build_config(RLConfig, raw, list(overrides), source=source)
    t0 = time.time()
    _, rows = train(cfg, resume)
    out = Path(cfg.out_dir)
    write_spectrum(rows, out, f"{cfg.env.id} ({cfg.train.sampling})")
    print(format_table(rows))
    print(f"trained and evaluated in {time.time() - t0:.0f} s; results in {out}")
    return 0
