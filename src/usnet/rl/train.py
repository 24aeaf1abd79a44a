"""An RL run: build the agent, PPO with the sandwich rule, checkpoints, the final spectrum.

``run(raw, overrides, resume)`` is what ``usnet train`` calls for a ``task: rl`` config. The run
folder (``out_dir``) holds ``checkpoint/`` (usnet.checkpoint: weights + usnet.json), ``resume.pt``
(optimizer, counters, RNG states; loaded with ``weights_only=True``), ``log.jsonl`` and, at
the end, the spectrum files of :mod:`usnet.spectrum` (``spectrum.csv/.json/.md/.png``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load, load_state, read_info, read_meta, save, save_state
from ..config import build_config, to_dict
from ..devices import resolve_device
from ..models import create_model
from ..nn import width_space
from ..spectrum import (
    Spectrum,
    compute_spectrum,
    describe,
    format_table,
    metric_provider,
    save_spectrum,
)
from .config import RLConfig
from .envs import make_vector_env, model_kwargs
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
    cfg: RLConfig, resume: bool = False, log: Callable[[str], None] = print
) -> tuple[nn.Module, Spectrum]:
    """Train for ``cfg.ppo.total_steps`` environment steps; returns the agent and its spectrum."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # tiny networks: more threads only add overhead
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    model = build_model(cfg).to(device)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir, resume_path = out / "checkpoint", out / "resume.pt"
    space = width_space(model)
    rollout_width = cfg.train.rollout_width or space.width_max
    space.canonical(rollout_width)  # in range, or a clear error
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.ppo.lr, eps=1e-5)
    generator = torch.Generator().manual_seed(cfg.seed)
    start, step = 0, 0
    collector_state: torch.Tensor | None = None
    if resume:
        if not resume_path.is_file():
            raise FileNotFoundError(f"cannot resume: {resume_path} does not exist")
        state = load_state(resume_path)
        loaded = load(ckpt_dir)
        if loaded.arch != model.arch or state["update"] != read_meta(ckpt_dir).get("update"):
            raise ValueError(
                f"{ckpt_dir} and {resume_path} do not belong together (architecture or update "
                "differ); delete them to start afresh"
            )
        model.load_state_dict(loaded.state_dict())
        optimizer.load_state_dict(state["optimizer"])  # moves its state to the weights' device
        generator.set_state(state["generator"])
        collector_state = state["collector_generator"]
        start, step = state["update"], state["step"]
        log(f"resumed from {ckpt_dir} at update {start} ({step} steps)")
    envs = make_vector_env(cfg.env.id, cfg.env.num_envs)
    collector = Collector(envs, _env_seed(cfg, start))
    if collector_state is not None:
        collector.generator.set_state(collector_state)
    config_data = to_dict(cfg)
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
                save_state(
                    {
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "collector_generator": collector.generator.get_state(),
                        "update": done,
                        "step": step,
                    },
                    resume_path,
                )
    finally:
        envs.close()
    # The spectrum, as `usnet spectrum` measures it: the RL provider plays eval.episodes at each
    # of eval.widths; latency is timed in interleaved rounds.
    provider = metric_provider(model, {"config": config_data, "task": "rl"})
    spec = compute_spectrum(
        model, cfg.eval.grid, provider, progress=False, label=f"PPO, {cfg.train.sampling}"
    )
    spec.source = {"checkpoint": str(ckpt_dir), "save_id": read_info(ckpt_dir)["save_id"]}
    return model, spec


def write_spectrum(spec: Spectrum, out: Path) -> list[Path]:
    """``spectrum.csv/.json/.md`` and ``spectrum.png`` in ``out``, as ``usnet spectrum`` writes."""
    from ..spectrum.plot import plot_spectrum  # matplotlib only when plotting

    return [*save_spectrum(spec, out), plot_spectrum(spec, out / "spectrum.png")]


def run(raw: dict, overrides: Sequence[str] = (), resume: bool = False, source: str = "") -> int:
    """``usnet train`` for ``task: rl``: validate the config, train, print the spectrum.

    ``source`` (the YAML file's name) only makes config errors name the file.
    """
    cfg = build_config(RLConfig, raw, list(overrides), source=source)
    t0 = time.time()
    _, spec = train(cfg, resume)
    out = Path(cfg.out_dir)
    write_spectrum(spec, out)
    print(describe(spec))
    print(format_table(spec))
    print(f"trained and evaluated in {time.time() - t0:.0f} s; results in {out}")
    return 0
