"""US actor-critics and PPO with the sandwich rule, on tiny settings (a short rollout, a few updates)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from usnet.checkpoint import load, read_meta
from usnet.config import ConfigError, build_config, load_yaml
from usnet.models import create_model
from usnet.nn import set_width, width
from usnet.profile import macs
from usnet.spectrum import load_spectrum
from usnet.tasks.rl.config import RLConfig
from usnet.tasks.rl.envs import make_vector_env, model_kwargs
from usnet.tasks.rl.evaluate import evaluate
from usnet.tasks.rl.ppo import Collector, PPOLoss, Rollout, minibatches, width_losses
from usnet.tasks.rl.task import TASK
from usnet.training import train
from usnet.training.step import sandwich_step

TINY = {
    "task": "rl",
    "env": {"id": "CartPole-v1", "num_envs": 2},
    "model": {"name": "us_actor_critic_mlp", "kwargs": {"hidden": [16, 16]}},
    "train": {"total_steps": 64, "log_every": 1, "threads": 0},  # 0: leave torch's threads
    "ppo": {"rollout_steps": 16, "epochs": 2, "minibatches": 2},
    "eval": {"episodes": 2, "widths": "0.25,1.0"},
}


def tiny(**train: object) -> dict:
    return {**TINY, "train": {**TINY["train"], **train}}


def sandwich_backward(model, batch, widths, cfg) -> dict:
    """Every width's loss parts, gradients accumulated (the shared step with PPO's loss)."""
    parts = sandwich_step(
        model, batch["obs"], batch, widths, PPOLoss(cfg.ppo, cfg.train),
        cfg.train.inplace_distillation,
    )
    return {w: {k: float(v) for k, v in p.items()} for w, p in zip(widths, parts, strict=True)}


def mlp(**kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("us_actor_critic_mlp", obs_dim=4, num_actions=2, env_id="CartPole-v1", **kw)


def rollout(model: torch.nn.Module, steps: int = 16, envs: int = 2) -> Rollout:
    vec = make_vector_env("CartPole-v1", envs)
    try:
        return Collector(vec, seed=0).collect(model, steps, 1.0, gamma=0.99)
    finally:
        vec.close()


def test_mlp_heads_do_not_slim_and_trunk_does() -> None:
    model = mlp(hidden=[64, 64])
    obs = torch.randn(5, 4)
    for w in (0.25, 0.6, 1.0):
        with width(model, w):
            logits, value = model(obs)
            assert logits.shape == (5, 2) and value.shape == (5,)
            assert model.actor[0].out_span.active == {0.25: 16, 0.6: 40, 1.0: 64}[w]
    # the profiler's (C, H, W) input works, and cost grows with width
    assert model.input_size == (4, 1, 1)
    costs = [macs(model, w) for w in (0.25, 0.5, 1.0)]
    assert costs[0] < costs[1] < costs[2]
    assert costs[2] == 2 * (4 * 64 + 64 * 64) + 64 * 2 + 64  # two trunks, two heads


def test_cnn_nature_trunk_slims_and_reads_uint8_frames() -> None:
    torch.manual_seed(0)
    model = create_model("us_actor_critic_cnn", num_actions=6)
    frames = torch.randint(0, 256, (2, 4, 84, 84), dtype=torch.uint8)
    for w in (0.25, 1.0):
        with width(model, w):
            logits, value = model(frames)
        assert logits.shape == (2, 6) and value.shape == (2,)
    full, narrow = macs(model, 1.0), macs(model, 0.25)
    # Nature-DQN: conv1 3.28 M + conv2 2.65 M + conv3 1.81 M + fc 1.61 M + heads 3.6 k
    assert (
        full
        == 20 * 20 * 32 * 4 * 64 + 9 * 9 * 64 * 32 * 16 + 7 * 7 * 64 * 64 * 9 + 3136 * 512 + 512 * 7
    )
    assert narrow < full / 6  # conv1's inputs do not slim, the rest is quadratic in width
    with pytest.raises(ValueError, match="'flat' and 'conv3'"):
        set_width(model, {"conv3": 0.5, "*": 1.0})
        model(frames)


def test_bad_model_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="obs_dim"):
        create_model("us_actor_critic_mlp", obs_dim=0, num_actions=2)
    with pytest.raises(ValueError, match="num_actions"):
        create_model("us_actor_critic_mlp", obs_dim=4, num_actions=-1)


def test_short_rollout_shapes_and_episodes() -> None:
    model = mlp()
    r = rollout(model, steps=40)
    assert r.obs.shape == (40, 2, 4) and r.actions.shape == (40, 2)
    assert r.last_value.shape == (2,)
    assert r.dones.sum() > 0  # a near-uniform policy drops the pole within 40 steps
    assert torch.all(r.logprobs <= 0)
    r.compute_gae(0.99, 0.95)
    flat = r.flat()
    assert flat["obs"].shape == (80, 4) and flat["returns"].shape == (80,)


def test_gae_stops_at_episode_ends() -> None:
    z = torch.zeros(3, 1)
    r = Rollout(
        obs=z,
        actions=z.long(),
        logprobs=z,
        values=torch.tensor([[0.5], [0.5], [0.5]]),
        rewards=torch.ones(3, 1),
        dones=torch.tensor([[0.0], [1.0], [0.0]]),
        last_value=torch.tensor([2.0]),
    )
    r.compute_gae(gamma=0.5, lam=1.0)
    # step 1 ends an episode: its return is its reward only; step 0 sees 1 + 0.5 * 1
    # step 2 bootstraps from last_value: 1 + 0.5 * 2
    assert torch.allclose(r.returns[:, 0], torch.tensor([1.5, 1.0, 2.0]))


def test_truncated_episodes_bootstrap_from_the_final_observation() -> None:
    model = mlp()
    final = np.array([None, np.ones(4, dtype=np.float32)], dtype=object)
    extra = Collector._bootstrap(
        model,
        term=np.array([True, False]),
        trunc=np.array([False, True]),
        info={"final_obs": final},
        gamma=0.9,
    )
    with torch.no_grad():
        v = model(torch.ones(1, 4))[1].item()
    assert extra[0] == 0.0 and extra[1] == pytest.approx(0.9 * v, rel=1e-5)


def test_sandwich_accumulates_every_width_into_one_optimizer_step() -> None:
    cfg = build_config(RLConfig, {**TINY, "ppo": {**TINY["ppo"], "epochs": 1, "minibatches": 1}})
    model = mlp(hidden=[16, 16])
    r = rollout(model)
    r.compute_gae(cfg.ppo.gamma, cfg.ppo.gae_lambda)
    batch = r.flat()
    batch["advantages"] = (batch["advantages"] - batch["advantages"].mean()) / (
        batch["advantages"].std() + 1e-8
    )
    widths = [1.0, 0.25, 0.5]
    no_distill = build_config(RLConfig, tiny(inplace_distillation=False))
    expected = [torch.zeros_like(p) for p in model.parameters()]
    for w in widths:  # each width alone (distillation off: no teacher needed)
        model.zero_grad()
        sandwich_backward(model, batch, [w], no_distill)
        for e, p in zip(expected, model.parameters(), strict=True):
            if p.grad is not None:
                e += p.grad
    model.zero_grad()
    stats = sandwich_backward(model, batch, widths, no_distill)
    assert set(stats) == set(widths)
    for e, p in zip(expected, model.parameters(), strict=True):
        assert torch.allclose(e, p.grad, atol=1e-6)



def test_the_trainer_takes_one_optimizer_step_per_minibatch(tmp_path) -> None:
    """PPO trains through the one trainer: per update, ppo.epochs x ppo.minibatches steps (each
    every sampled width's forward and backward, then one step), the minibatches splitting the
    rollout's samples."""
    cfg = build_config(RLConfig, {**TINY, "output": {"dir": str(tmp_path / "run")}})
    from usnet.training import trainer

    calls, steps = [], []
    real_step, real_sandwich = torch.optim.Adam.step, trainer.sandwich_step

    def counting(self, *args, **kwargs):
        steps.append(len(calls))
        return real_step(self, *args, **kwargs)

    def recording(model, inputs, target, widths, *args, **kwargs):
        calls.append((len(inputs), len(widths)))
        return real_sandwich(model, inputs, target, widths, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", counting)
        mp.setattr(trainer, "sandwich_step", recording)
        train(TASK, cfg)
    per_update = cfg.ppo.epochs * cfg.ppo.minibatches
    assert steps == list(range(1, cfg.num_updates * per_update + 1)) and len(steps) == 8
    assert calls == [(cfg.batch_size // cfg.ppo.minibatches, cfg.train.num_widths)] * 8
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,lr,") and "step" in rows[0] and "kl_smallest" in rows[0]
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]  # log_every 1: every update


def test_minibatches_cover_the_rollout_once_per_pass_with_normalised_advantages() -> None:
    cfg = build_config(RLConfig, TINY).ppo
    r = rollout(mlp(), steps=16)
    g = torch.Generator().manual_seed(0)
    got = list(minibatches(r, cfg, g, torch.device("cpu")))
    assert len(got) == cfg.epochs * cfg.minibatches
    flat = r.flat()
    for p in range(cfg.epochs):
        part = got[p * cfg.minibatches : (p + 1) * cfg.minibatches]
        actions = torch.cat([b["actions"] for _, b in part])
        obs = torch.cat([x for x, _ in part])
        assert sorted(obs[:, 0].tolist()) == sorted(flat["obs"][:, 0].tolist())
        assert len(actions) == len(flat["actions"])
    for x, b in got:
        assert x is b["obs"]
        assert b["advantages"].mean().abs() < 1e-5 and (b["advantages"].std() - 1).abs() < 1e-4


def test_distillation_switch_changes_only_the_narrow_widths_loss() -> None:
    model = mlp(hidden=[16, 16])
    r = rollout(model)
    r.compute_gae(0.99, 0.95)
    batch = r.flat()
    on = build_config(RLConfig, tiny(inplace_distillation=True))
    off = build_config(RLConfig, tiny(inplace_distillation=False))
    widths = [1.0, 0.25]
    s_on = sandwich_backward(model, batch, widths, on)
    s_off = sandwich_backward(model, batch, widths, off)
    assert s_on[1.0]["loss"] == pytest.approx(s_off[1.0]["loss"])
    assert "kl" not in s_on[1.0] and "kl" in s_on[0.25] and "kl" not in s_off[0.25]
    assert s_on[0.25]["loss"] > s_off[0.25]["loss"]  # KL >= 0 and MSE >= 0, not both zero
    assert s_on[0.25]["kl"] > 0

    # the KL term is the real one: zero when the student's outputs equal the teacher's
    logits, value = model(batch["obs"])
    teacher = (torch.log_softmax(logits.detach(), -1), value.detach())
    parts = width_losses(logits, value, batch, on.ppo, teacher, on.train)
    assert parts["kl"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["value_distill"].item() == pytest.approx(0.0, abs=1e-9)


def test_evaluate_gives_mean_and_std_per_width_reproducibly() -> None:
    model = mlp()
    a = evaluate(model, 0.25, episodes=3, seed=5)
    b = evaluate(model, 0.25, episodes=3, seed=5)
    assert set(a) >= {"return_mean", "return_std"} and a["episodes"] == 3
    assert a == b
    assert a["return_mean"] >= 8  # CartPole gives at least ~8 steps of reward 1
    with pytest.raises(ValueError, match="env_id"):
        evaluate(create_model("us_actor_critic_mlp", obs_dim=4, num_actions=2), 1.0)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="ppo.minibatches"):
        build_config(RLConfig, {"ppo": {"minibatches": 3}, "env": {"num_envs": 2}})
    with pytest.raises(ConfigError, match="train.widths"):
        build_config(RLConfig, {"train": {"sampling": "fixed"}})
    with pytest.raises(ConfigError, match="optim.lr"):
        build_config(RLConfig, {}, ["optim.lr=-1"])
    with pytest.raises(ValueError, match="discrete"):
        model_kwargs("Pendulum-v1")
    with pytest.raises(ValueError, match="env id"):
        model_kwargs("")
    with pytest.raises(ValueError, match="NoSuchEnv"):
        model_kwargs("NoSuchEnv-v0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            train(TASK, build_config(RLConfig, tiny(device="cuda")))


def test_training_is_seeded_and_reproducible(tmp_path) -> None:
    cfg = {**TINY, "eval": {"episodes": 1, "widths": "1.0"}}
    runs = [build_config(RLConfig, {**cfg, "output": {"dir": str(tmp_path / n)}}) for n in "ab"]
    a, b = (load(train(TASK, run).checkpoint) for run in runs)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


def run(raw: dict, overrides: list[str], resume: bool = False) -> str:
    return train(TASK, build_config(RLConfig, raw, overrides), resume=resume).text


def test_run_end_to_end_checkpoint_and_resume(tmp_path, caplog) -> None:
    out = tmp_path / "run"
    printed = run(TINY, [f"output.dir={out}"])
    assert "mean episodic return" in printed and "\n0.25 " in printed and "\n1 " in printed
    spec = load_spectrum(out)  # the format `usnet spectrum` writes, through the same package
    assert [r.width for r in spec.rows] == [0.25, 1.0] and spec.has_latency
    assert spec.rows[0].macs < spec.rows[1].macs and "return_mean" in spec.rows[0].metrics
    assert spec.source["checkpoint"] == str(out / "checkpoint")
    assert (out / "spectrum.png").stat().st_size > 0
    agent = load(out / "checkpoint")
    meta = read_meta(out / "checkpoint")
    assert agent.env_id == "CartPole-v1" and meta["epoch"] == 2  # an epoch is one update
    returns = {r["width"]: r["return_mean"] for r in meta["results"]}
    assert returns == {r.width: r.metrics["return_mean"] for r in spec.rows}
    assert evaluate(agent, 0.5, episodes=1)["episodes"] == 1
    # resume: a longer budget continues from update 2
    with caplog.at_level(logging.INFO, logger="usnet"):
        run(TINY, [f"output.dir={out}", "train.total_steps=96"], resume=True)
    assert "resumed" in caplog.text and "epoch=3 " in caplog.text
    assert read_meta(out / "checkpoint")["epoch"] == 3


@pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None or importlib.util.find_spec("cv2") is None,
    reason="Atari needs ale-py and OpenCV",
)
def test_atari_gets_the_standard_wrappers_and_the_cnn() -> None:
    name, kw = model_kwargs("ALE/Pong-v5")
    assert name == "us_actor_critic_cnn" and kw["in_chans"] == 4 and kw["input_size"] == 84
    envs = make_vector_env("ALE/Pong-v5", 1)
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8
    finally:
        envs.close()


@pytest.mark.parametrize("path", sorted(Path(__file__).parent.parent.glob("configs/rl_*.yaml")))
def test_shipped_rl_recipes_validate(path: Path) -> None:
    cfg = build_config(RLConfig, load_yaml(path), source=str(path))
    assert cfg.num_updates >= 1 and cfg.eval.grid
