"""``usnet.frozen``: eval keeps each width's tensors contiguous and unchecked inside the block.

The oracle is the dense export (``extract``: timm's own ``Attention``, plain layers, weights
copied), which shares no code with the frozen path; the promise (nothing changes inside the
block) is checked when the block ends.
"""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from tiny import tiny_inputs, tiny_model

import usnet
from usnet.calibration import calibrate
from usnet.errors import UsageError
from usnet.export import extract
from usnet.nn import Sliced, width_space

WIDTHS = [0.25, 0.5, 0.75, 1.0]


def _vit() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    vit = VisionTransformer(16, 4, 3, 5, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    return usnet.convert(vit, x[:1], divisor=4).eval(), x


def _frozen_caches(model: torch.nn.Module) -> int:
    return sum("_frozen_cache" in vars(m) for m in model.modules() if isinstance(m, Sliced))


@pytest.mark.parametrize("w", [*WIDTHS, {"*": 0.5, "blocks.0.attn": 0.25}])
def test_frozen_vit_equals_its_dense_export(w):
    model, x = _vit()
    dense = extract(model, w)
    with torch.no_grad():
        expected = dense(x)
        with usnet.frozen(model), usnet.width(model, w):
            out, again = model(x), model(x)  # the second call is a cache hit
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again, out, rtol=0, atol=0)


def test_frozen_bn_network_equals_eval_outside_and_its_dense_export():
    model, x = tiny_model(), tiny_inputs(8)
    widths = [0.35, 0.5, 0.75, 1.0]  # the tiny model's range starts at 0.35
    calibrate(model, [x], widths)
    model.eval()
    for w in widths:
        with torch.no_grad(), usnet.width(model, w):
            plain = model(x)
            with usnet.frozen(model):
                frozen = model(x)
            torch.testing.assert_close(frozen, plain, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(frozen, extract(model, w)(x), rtol=1e-4, atol=1e-5)


def test_the_block_keeps_contiguous_tensors_and_drops_them_at_its_end():
    model, x = _vit()
    with torch.inference_mode(), usnet.frozen(model), usnet.width(model, 0.5):
        model(x)
        attn = model.blocks[0].attn
        (_, weight, _), = vars(attn)["_frozen_cache"].values()
        assert weight.is_contiguous() and weight.dim() == 2  # q/k/v rows gathered
        assert _frozen_caches(model) > 0
    assert _frozen_caches(model) == 0
    assert width_space(model).freezes == []


def test_threads_run_their_own_widths_inside_one_block():
    model, x = _vit()
    with torch.no_grad():
        expected = {w: extract(model, w)(x) for w in WIDTHS}
    results: dict[float, list[torch.Tensor]] = {w: [] for w in WIDTHS}

    def serve(w: float) -> None:
        for _ in range(5):
            with torch.no_grad(), usnet.width(model, w):
                results[w].append(model(x))

    with usnet.frozen(model):
        threads = [threading.Thread(target=serve, args=(w,)) for w in WIDTHS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for w in WIDTHS:
        assert len(results[w]) == 5
        for out in results[w]:
            torch.testing.assert_close(out, expected[w], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("change", ["in place", "through .data", "new storage"])
def test_a_change_inside_the_block_raises_at_its_end(change):
    model, x = _vit()
    with pytest.raises(UsageError, match=r"usnet\.frozen: 1 layer\(s\) changed .*blocks\.1\.mlp\.fc2"):
        with torch.no_grad(), usnet.frozen(model), usnet.width(model, 0.5):
            model(x)
            weight = model.blocks[1].mlp.fc2.weight
            if change == "in place":
                weight.mul_(2)
            elif change == "through .data":  # leaves no trace on the version counter
                weight.data = weight.data * 2  # noqa: PLW2901
            else:
                weight.data = weight.data.clone()
    assert _frozen_caches(model) == 0


def test_an_assignment_inside_the_block_is_seen_and_does_not_raise():
    model, x = _vit()
    fc2 = model.blocks[1].mlp.fc2
    with torch.no_grad(), usnet.frozen(model), usnet.width(model, 0.5):
        before = model(x)
        fc2.weight = torch.nn.Parameter(fc2.weight * 2)  # drops that layer's tensors
        after = model(x)
        expected = extract(model, 0.5)(x)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-5)


def test_an_error_inside_the_block_propagates_and_the_block_still_ends():
    model, x = _vit()
    with pytest.raises(KeyError):
        with torch.no_grad(), usnet.frozen(model):
            model(x)
            raise KeyError("the user's own error")
    assert _frozen_caches(model) == 0 and width_space(model).freezes == []


def test_after_the_block_eval_sees_in_place_changes_again():
    model, x = _vit()
    with torch.no_grad():
        with usnet.frozen(model), usnet.width(model, 0.5):
            model(x)
        model.blocks[0].mlp.fc1.weight.data.mul_(3)  # no version bump: only views see it
        with usnet.width(model, 0.5):
            out = model(x)
        expected = extract(model, 0.5)(x)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_nested_blocks_end_with_the_outer_one_and_a_copy_is_not_frozen():
    model, x = _vit()
    with torch.no_grad(), usnet.frozen(model):
        with usnet.frozen(model):
            model(x)
        assert _frozen_caches(model) > 0  # the outer block is still open
        twin = copy.deepcopy(model)
        assert width_space(twin).freezes == []
    assert _frozen_caches(model) == 0


def test_training_inside_the_block_computes_afresh():
    model, x = _vit()
    with usnet.frozen(model), usnet.width(model, 0.5):
        model.train()
        loss = model(x).square().mean()
        loss.backward()
        model.eval()
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert _frozen_caches(model) == 0


def test_position_embedding_reads_as_parametrize_does_and_keeps_its_keys():
    model, _ = _vit()
    keys = set(model.state_dict())
    assert "parametrizations.pos_embed.original" in keys
    plist = model.parametrizations.pos_embed
    with torch.no_grad(), usnet.width(model, 0.5):
        direct = model.pos_embed
        through_parametrize = plist()  # parametrize's own path: the list's forward
        with torch.nn.utils.parametrize.cached():
            cached = model.pos_embed
    assert direct.shape[-1] < plist.original.shape[-1]
    torch.testing.assert_close(direct, through_parametrize, rtol=0, atol=0)
    torch.testing.assert_close(cached, through_parametrize, rtol=0, atol=0)
    with usnet.width(model, 0.5):  # with autograd: a view with a gradient path
        assert model.pos_embed.requires_grad and model.pos_embed.grad_fn is not None


@pytest.mark.parametrize("then", ["eval", "train and eval", "another attribute"])
def test_a_change_then_a_stale_call_is_reported_after_the_layer_is_touched(then):
    model, x = _vit()
    fc2 = model.blocks[1].mlp.fc2
    with pytest.raises(UsageError, match=r"blocks\.1\.mlp\.fc2"):
        with torch.no_grad(), usnet.frozen(model), usnet.width(model, 0.5):
            model(x)
            fc2.weight.mul_(2)
            stale = model(x)  # the old copies: what the block's end must report
            assert not torch.allclose(stale, extract(model, 0.5)(x))
            if then == "eval":
                model.eval()
            elif then == "train and eval":
                model.train().eval()
            else:
                fc2.note = "served"


def test_model_eval_inside_the_block_keeps_the_frozen_tensors():
    model, x = _vit()
    attn = model.blocks[0].attn
    with torch.no_grad(), usnet.frozen(model), usnet.width(model, 0.5):
        model(x)
        (kept,) = vars(attn)["_frozen_cache"].values()
        model.eval()
        model(x)
        (again,) = vars(attn)["_frozen_cache"].values()
    assert again[1] is kept[1]


def test_functional_call_at_a_new_width_inside_the_block_is_reported():
    model, x = _vit()
    params = {k: v * 2 for k, v in model.named_parameters()}
    with pytest.raises(UsageError, match=r"changed inside the frozen block"):
        with torch.no_grad(), usnet.frozen(model):
            model(x)
            with usnet.width(model, 0.5):  # its copies would be cut from the swapped tensors
                torch.func.functional_call(model, params, (x,))
