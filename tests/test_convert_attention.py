"""Converted transformers (timm ViT, torchvision ViT and Swin, nn.TransformerEncoder, sdpa) against
oracles that share no code with the converted layers:

- the *masked original*: the original network whose dropped heads and MLP hidden units are zeroed
  where their outputs are read (the output projection's input columns of a dropped head, the
  second MLP linear's input columns of a dropped unit). A dropped head or unit then adds nothing,
  which is exactly what dropping it means; the embedding stays whole (a layer norm over zeroed
  channels would count them, so zeroing is no oracle there);
- the *narrow original*: the original class built at the narrower config (embedding, heads, MLP)
  holding the leading slices of the original weights (q, k and v each keep their first heads),
  which checks the embedding's slimming too;
- exact at width 1.0, and the dense export equal at narrow widths.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer as TimmViT
from torch import Tensor, nn
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer as TorchvisionViT

import usnet
from usnet.convert import ConvertError, convert, kind_widths
from usnet.convert.plan import Plan
from usnet.errors import UsageError
from usnet.export import SUFFIXES, extract, read_info, save
from usnet.nn import Sliced, width_space

V, N, E, H, HIDDEN = 50, 6, 32, 4, 64  # vocabulary, tokens, embedding, heads, MLP hidden


class TextClassifier(nn.Module):
    """A user's transformer text classifier: token and position embeddings, nn.TransformerEncoder."""

    def __init__(self, max_norm: float | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(V, E, max_norm=max_norm)
        self.pos = nn.Parameter(torch.zeros(1, N, E))
        layer = nn.TransformerEncoderLayer(E, H, HIDDEN, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(E, 5)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.head(self.encoder(self.emb(tokens) + self.pos).mean(1))


class SdpaBlock(nn.Module):
    """Attention written with tensor ops: separate q, k, v, heads of a fixed size, sdpa."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, E)
        self.q, self.k, self.v, self.o = (nn.Linear(E, E) for _ in range(4))
        self.norm = nn.LayerNorm(E)
        self.fc1, self.fc2 = nn.Linear(E, HIDDEN), nn.Linear(HIDDEN, E)
        self.head = nn.Linear(E, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        b, n, _ = x.shape
        q, k, v = (p(x).view(b, n, -1, E // H).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        x = self.norm(x + self.o(a))
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x.mean(1))


def _timm_vit() -> nn.Module:
    return TimmViT(16, 4, 3, 5, embed_dim=E, depth=2, num_heads=H, mlp_ratio=HIDDEN / E)


#: name -> (build, input, {heads group -> what reads the heads}, {MLP group -> what reads it})
MODELS = {
    "text": (
        TextClassifier,
        lambda: torch.randint(0, V, (2, N)),
        {f"encoder.layers.{i}.self_attn": f"encoder.layers.{i}.self_attn.out_proj" for i in (0, 1)},
        {f"encoder.layers.{i}.linear1": f"encoder.layers.{i}.linear2" for i in (0, 1)},
    ),
    "timm_vit": (
        _timm_vit,
        lambda: torch.randn(2, 3, 16, 16),
        {f"blocks.{i}.attn": f"blocks.{i}.attn.proj" for i in (0, 1)},
        {f"blocks.{i}.mlp.fc1": f"blocks.{i}.mlp.fc2" for i in (0, 1)},
    ),
    "torchvision_vit": (
        lambda: TorchvisionViT(16, 4, 2, H, E, HIDDEN, num_classes=5),
        lambda: torch.randn(2, 3, 16, 16),
        {
            f"encoder.layers.encoder_layer_{i}.self_attention": (
                f"encoder.layers.encoder_layer_{i}.self_attention.out_proj"
            )
            for i in (0, 1)
        },
        {f"encoder.layers.encoder_layer_{i}.mlp.0": f"encoder.layers.encoder_layer_{i}.mlp.3"
         for i in (0, 1)},  # fmt: skip
    ),
    "swin": (
        lambda: SwinTransformer([2, 2], 16, [2, 2], [2, 4], [2, 2], num_classes=5),
        lambda: torch.randn(2, 3, 16, 16),
        {f"features.{s}.{i}.attn": f"features.{s}.{i}.attn.proj" for s in (1, 3) for i in (0, 1)},
        {f"features.{s}.{i}.mlp.0": f"features.{s}.{i}.mlp.3" for s in (1, 3) for i in (0, 1)},
    ),
    "sdpa": (
        SdpaBlock,
        lambda: torch.randn(2, N, 8),
        {"q": "o"},  # the heads are named after the reshape's input, q
        {"fc1": "fc2"},
    ),
}


def _original(name: str) -> tuple[nn.Module, Tensor]:
    build, example = MODELS[name][:2]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():  # zero-initialised heads, tokens, biases: away from 0 and 1
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model, example()


def _convert(model: nn.Module, x: Tensor, **kwargs: object) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the head and the input stay whole
        return convert(model, x, **kwargs).eval()  # type: ignore[arg-type]


def _kinds(model: nn.Module) -> dict[str, str]:
    return {g.name: g.kind for g in Plan.from_json(model.conversion["plan"]).groups}


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _masked(original: nn.Module, readers: dict[str, str], counts: dict[str, int], per: int) -> nn.Module:
    """``original`` with the input columns past ``counts[group] * per`` of each reader zeroed."""
    net = copy.deepcopy(original)
    with torch.no_grad():
        for group, reader in readers.items():
            net.get_submodule(reader).weight[:, counts[group] * per :] = 0
    return net


@pytest.mark.parametrize("name", list(MODELS))
def test_exact_at_full_width_and_equal_to_the_masked_original_at_narrow_widths(name) -> None:
    original, x = _original(name)
    model = _convert(original, x)
    heads, mlp = MODELS[name][2], MODELS[name][3]
    kinds = _kinds(model)
    assert {g: kinds.get(g) for g in heads} == dict.fromkeys(heads, "heads")
    assert {g: kinds.get(g) for g in mlp} == dict.fromkeys(mlp, "mlp")
    assert "embedding" in kinds.values()
    with torch.no_grad():
        want = original(x)
        assert _rel(model(x), want) <= 1e-5
    space = width_space(model)
    full = {g.name: g.full for g in space.groups}
    embedding = [g for g, k in kinds.items() if k == "embedding"]
    for w in (0.25, 0.5, 0.75):
        config = {**{g: w for g in kinds}, **dict.fromkeys(embedding, 1.0)}
        counts = space.channels(config)
        head_dims = {g: original.get_submodule(r).in_features // full[g] for g, r in heads.items()}
        net = copy.deepcopy(original)
        with torch.no_grad():
            for g, r in heads.items():
                net.get_submodule(r).weight[:, counts[g] * head_dims[g] :] = 0
            for g, r in mlp.items():
                net.get_submodule(r).weight[:, counts[g] :] = 0
        assert all(counts[g] < full[g] for g in (*heads, *mlp)) or w > 0.5, w
        with torch.no_grad(), usnet.width(model, config):
            assert _rel(model(x), net(x)) <= 1e-5, w


@pytest.mark.parametrize("name", list(MODELS))
def test_dense_export_equals_the_slimmed_network(name) -> None:
    original, x = _original(name)
    model = _convert(original, x)
    per_kind = kind_widths(model, heads=0.5, mlp=0.75, embedding=0.25)
    counts = width_space(model).channels(per_kind)
    for g, k in _kinds(model).items():  # each kind at its own width
        want = {"heads": 0.5, "mlp": 0.75, "embedding": 0.25}[k]
        assert counts[g] == width_space(model).channels(want)[g], g
    for config in (0.25, 0.5, per_kind):
        dense = extract(model, config)
        assert not any(isinstance(m, Sliced) for m in dense.modules())
        if not isinstance(config, dict):  # embedding == heads' width: the original classes
            assert not any(type(m).__module__.startswith("usnet") for m in dense.modules())
        with torch.no_grad(), usnet.width(model, config):
            slim = model(x)
            assert _rel(dense(x), slim) <= 1e-5, config
    assert usnet.macs(model, 0.5) <= 0.35 * usnet.macs(model, 1.0)


def _narrow_state(original: nn.Module, narrow: nn.Module, qkv: tuple[str, ...]) -> dict[str, Tensor]:
    """The original's weights cut to ``narrow``'s shapes: leading slices on every dimension;
    the fused q/k/v weights named in ``qkv`` keep the leading rows of each of the three."""
    state = {}
    for key, t in original.state_dict().items():
        shape = narrow.state_dict()[key].shape
        if key.endswith(qkv):
            t = t.unflatten(0, (3, -1))[:, : shape[0] // 3].flatten(0, 1)
        state[key] = t[tuple(slice(0, s) for s in shape)].clone()
    return state


def test_the_embedding_slims_as_the_narrower_original_computes() -> None:
    original, x = _original("timm_vit")
    model = _convert(original, x)
    counts = width_space(model).channels(0.5)
    kinds = _kinds(model)
    (e,) = {counts[g] for g, k in kinds.items() if k == "embedding"}
    (k,) = {counts[g] for g, k in kinds.items() if k == "heads"}
    (m,) = {counts[g] for g, k in kinds.items() if k == "mlp"}
    assert (e, k, m) == (E // 2, H // 2, HIDDEN // 2)
    narrow = TimmViT(16, 4, 3, 5, embed_dim=e, depth=2, num_heads=k, mlp_ratio=m / e).eval()
    narrow.blocks[0].attn.head_dim = narrow.blocks[1].attn.head_dim = E // H  # timm: e // k
    narrow.load_state_dict(_narrow_state(original, narrow, ("qkv.weight", "qkv.bias")))
    with torch.no_grad(), usnet.width(model, 0.5):
        assert _rel(model(x), narrow(x)) <= 1e-5


def test_keeping_the_embedding_slims_heads_and_mlp_and_matches_the_masked_original() -> None:
    original, x = _original("timm_vit")
    model = _convert(original, x, keep=["patch_embed.proj"])
    kinds = _kinds(model)
    assert sorted(set(kinds.values())) == ["heads", "mlp"]
    counts = width_space(model).channels(0.5)
    net = _masked(original, MODELS["timm_vit"][2], counts, E // H)
    net = _masked(net, MODELS["timm_vit"][3], counts, 1)
    with torch.no_grad(), usnet.width(model, 0.5):
        assert _rel(model(x), net(x)) <= 1e-5


def test_token_inputs_pass_through_calibration_macs_and_export_untouched() -> None:
    class Normed(TextClassifier):  # a batch norm over the embedding: calibration runs forwards
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm1d(E)

        def forward(self, tokens: Tensor) -> Tensor:
            x = self.bn((self.emb(tokens) + self.pos).transpose(1, 2)).transpose(1, 2)
            return self.head(self.encoder(x).mean(1))

    torch.manual_seed(0)
    model = _convert(Normed().eval(), torch.randint(0, V, (1, N)))  # a batch of one: traced twice
    seen: list[torch.dtype] = []
    model.emb.register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    loader = [torch.randint(0, V, (8, N)) for _ in range(2)]
    assert usnet.calibrate(model, loader, widths=[0.5]) == 16
    assert seen and set(seen) == {torch.int64}
    assert usnet.is_calibrated(model, 0.5)
    assert 0 < usnet.macs(model, 0.5) <= 0.6 * usnet.macs(model, 1.0)
    seen.clear()
    assert usnet.profile.latency(model, 0.5, repeats=2, warmup=1)["median_ms"] > 0
    assert seen and set(seen) == {torch.int64}  # timed on token ids too
    dense = extract(model, 0.5)
    x = torch.randint(0, V, (3, N))
    with torch.no_grad(), usnet.width(model, 0.5):
        assert _rel(dense(x), model(x)) <= 1e-5


def test_what_cannot_slim_names_the_module_and_the_keep() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, V, (2, N))
    with pytest.raises(ConvertError, match=r"'emb'.*max_norm.*keep=\['emb'\]"):
        convert(TextClassifier(max_norm=1.0), x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = convert(TextClassifier(max_norm=1.0), x, keep=["emb"])
    assert "embedding" not in _kinds(model).values()  # heads and MLP still slim
    assert "heads" in _kinds(model).values()


def test_kind_widths_names_the_kinds_it_knows() -> None:
    original, x = _original("sdpa")
    model = _convert(original, x)
    assert kind_widths(model, heads=0.5) == {"q": 0.5, "*": 1.0}
    with pytest.raises(UsageError, match=r"unknown kind\(s\) \['head'\]; allowed"):
        kind_widths(model, head=0.5)


def test_kind_widths_refuses_a_kind_the_model_lacks_and_a_width_that_is_no_number() -> None:
    original, x = _original("sdpa")
    model = _convert(original, x)
    kinds = sorted(set(_kinds(model).values()))
    assert "channels" not in kinds
    with pytest.raises(UsageError, match=r"no channel group of kind\(s\) \['channels'\]"):
        kind_widths(model, channels=0.5)  # would change nothing
    for bad in ("half", None, True, float("nan")):
        with pytest.raises(UsageError, match=r"heads=.* is not a width"):
            kind_widths(model, heads=bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match=r"rest='x' is not a width"):
        kind_widths(model, rest="x")  # type: ignore[arg-type]


def test_a_fixed_number_of_heads_is_refused_with_the_way_out() -> None:
    class FixedHeads(SdpaBlock):
        def forward(self, x: Tensor) -> Tensor:
            x = self.embed(x)
            b, n, _ = x.shape
            q, k, v = (p(x).view(b, n, H, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
            return self.head(self.o(a).mean(1))

    with pytest.raises(ConvertError, match=r"(?s)keep=\['q', 'k', 'v'\].*fixed number \(4\) of blocks"):
        convert(FixedHeads(), torch.randn(2, N, 8))


@pytest.mark.parametrize(("name", "fmt"), [("timm_vit", "onnx"), ("text", "onnx"), ("swin", "torchscript")])
def test_files_of_a_narrow_width_run_in_onnx_runtime_and_torchscript(name, fmt, tmp_path) -> None:
    original, x = _original(name)
    model = _convert(original, x)
    path = save(model, 0.5, tmp_path / f"model{SUFFIXES[fmt]}", fmt)  # verify: loaded back, equal
    assert read_info(path)["width"] is not None
