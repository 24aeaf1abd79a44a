"""The eval fast path (cached weight slices and BN statistics) never serves stale tensors."""

from __future__ import annotations

import copy

import torch
from tiny import eval_at, tiny_inputs, tiny_model

import usnet
from usnet.calibration import attach_calibration_data, calibrate, is_calibrated


def test_a_deep_copy_does_not_reuse_the_originals_cached_tensors():
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    eval_at(model, x)  # fills the caches
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(1.5)
    fresh = copy.deepcopy(twin)
    for m in fresh.modules():
        if isinstance(m, usnet.nn.Sliced):
            m.forget_cache()
    torch.testing.assert_close(eval_at(twin, x), eval_at(fresh, x))


def test_dtype_change_after_eval_uses_new_weights():
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    eval_at(model, x)
    out = eval_at(model.double(), x.double())
    assert out.dtype == torch.float64


def test_loading_replaces_the_calibrated_set():
    a, b, x = tiny_model(), tiny_model(), tiny_inputs(16)
    calibrate(a, [x], [0.75, 1.0])
    calibrate(b, [x * 2], [0.35])  # 0.35 is another network than 0.75 or 1.0
    b.load_state_dict(a.state_dict())  # strict: b's 0.35 statistics must not be "missing"
    assert is_calibrated(b, 0.75) and is_calibrated(b, 1.0) and not is_calibrated(b, 0.35)
    torch.testing.assert_close(eval_at(b, x, 0.75), eval_at(a, x, 0.75))


def test_extract_drops_attached_calibration_data():
    model = usnet.create_model("us_mlp", hidden=(16, 16))
    attach_calibration_data(model, [torch.randn(8, 1, 28, 28)], num_samples=8)
    dense = usnet.export.extract(model, 0.5)
    assert not dense._forward_pre_hooks
    assert dense(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def _fresh(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with empty caches (deepcopy drops them): what the weights really compute."""
    return copy.deepcopy(model)


def test_in_place_writes_through_p_data_are_seen():
    """EMA, SWA and pruning write through ``p.data``, which does not bump ``p._version``."""
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    before = eval_at(model, x)  # fills the caches
    g = torch.Generator().manual_seed(3)
    for p in model.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.2 + p.data)
    after = eval_at(model, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, eval_at(_fresh(model), x), rtol=0, atol=0)
    for p in model.parameters():
        p.data.mul_(0)
    torch.testing.assert_close(eval_at(model, x), eval_at(_fresh(model), x), rtol=0, atol=0)


def test_new_storage_through_p_data_is_seen():
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    before = eval_at(model, x)
    for m in model.modules():
        if isinstance(m, (usnet.nn.USConv2d, usnet.nn.USBatchNorm2d)):
            m.weight.data = m.weight.data * 1.5  # a new tensor: the old address may be reused
    after = eval_at(model, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, eval_at(_fresh(model), x), rtol=0, atol=0)


def test_sliced_weights_of_a_channels_last_model_keep_their_layout():
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    expected = eval_at(model, x)
    model = model.to(memory_format=torch.channels_last)
    out = eval_at(model, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected)
    convs = [
        m
        for m in model.modules()
        if isinstance(m, usnet.nn.USConv2d) and m.kernel_size == (1, 1) and not m.depthwise
    ]
    assert convs
    used: dict[usnet.nn.USConv, torch.Tensor] = {}

    def record(conv, args, out):  # noqa: ANN001  # the weight the eval forward ran with
        used[conv] = conv._current()[0]

    hooks = [conv.register_forward_hook(record) for conv in convs]
    eval_at(model, x, 0.5)
    for h in hooks:
        h.remove()
    assert set(used) == set(convs)
    assert any(sliced.shape != conv.weight.shape for conv, sliced in used.items())
    for conv, sliced in used.items():
        w = conv.weight
        assert w.is_contiguous(memory_format=torch.channels_last)
        assert sliced.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()
        assert sliced.stride() == w.stride()  # a view: channels-last strides, no copy


def test_new_parameters_assigned_or_loaded_with_assign_are_seen():
    """A hit does not read a layer's tensors again: assigning any attribute drops its cache."""
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    eval_at(model, x)
    convs = [m for m in model.modules() if isinstance(m, usnet.nn.USConv2d)]
    for conv in convs:
        conv.weight = torch.nn.Parameter(conv.weight.detach() * -1.0)
    torch.testing.assert_close(eval_at(model, x), eval_at(_fresh(model), x), rtol=0, atol=0)
    state = {k: v * 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    eval_at(model, x)
    model.load_state_dict(state, assign=True)
    torch.testing.assert_close(eval_at(model, x), eval_at(_fresh(model), x), rtol=0, atol=0)


def test_a_parametrization_registered_after_caching_is_applied_on_every_call():
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    eval_at(model, x)

    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.factor = 1.0

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return w * self.factor

    scales = []
    for m in model.modules():
        if isinstance(m, usnet.nn.USConv2d):
            scales.append(Scale())
            torch.nn.utils.parametrize.register_parametrization(m, "weight", scales[-1])
    before = eval_at(model, x)
    for s in scales:
        s.factor = 0.25  # changes what every read of the weight gives: nothing may be cached
    after = eval_at(model, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, eval_at(_fresh(model), x), rtol=0, atol=0)


def test_an_attentions_child_projection_given_a_new_weight_is_seen():
    """The fused q/k/v weight is a child's (``attn.qkv.weight``): read again on every hit."""
    timm = __import__("pytest").importorskip("timm")
    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=4,
        num_classes=3,
    )
    x = torch.randn(2, 3, 16, 16)
    us = usnet.convert(vit, x)
    before = eval_at(us, x)
    attn = us.blocks[0].attn
    attn.qkv.weight = torch.nn.Parameter(attn.qkv.weight.detach().flip(0))
    after = eval_at(us, x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, eval_at(_fresh(us), x), rtol=0, atol=0)


def _scaled(tensors: dict[str, torch.Tensor], factor: float) -> dict[str, torch.Tensor]:
    return {k: v.detach() * factor if v.is_floating_point() else v for k, v in tensors.items()}


def test_tensors_swapped_past_setattr_are_seen():
    """``functional_call`` and ``register_parameter`` write ``_parameters``/``_buffers``
    directly; a hit checks those dicts, so a warm cache never answers with the old tensors."""
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    eval_at(model, x)  # fills the caches
    params = _scaled(dict(model.named_parameters()), 0.5)
    buffers = _scaled(dict(model.named_buffers()), 2.0)  # the calibrated statistics too
    with usnet.width(model, 0.5), torch.no_grad():
        out = torch.func.functional_call(model, {**params, **buffers}, (x,))
    oracle = _fresh(model)
    oracle.load_state_dict({**params, **buffers})
    torch.testing.assert_close(out, eval_at(oracle, x), rtol=0, atol=0)
    for m in model.modules():
        if isinstance(m, usnet.nn.USConv2d):
            m.register_parameter("weight", torch.nn.Parameter(m.weight.detach() * -1.0))
    with usnet.width(model, 0.5), torch.no_grad():  # no .eval(): it would drop the caches
        out = model(x)
    torch.testing.assert_close(out, eval_at(_fresh(model), x), rtol=0, atol=0)


def test_a_warm_model_copies_and_loads_by_swapping_after_an_optimizer_step():
    """Copies leave the cache behind (a cached view of a stepped parameter cannot be copied);
    a swapping load (``torch.__future__``) finds no cached reference to the old tensors."""
    model, x = tiny_model(), tiny_inputs(16)
    calibrate(model, [x], [0.5])
    eval_at(model, x)
    with usnet.width(model, 0.5):
        model(x).sum().backward()  # eval mode, autograd on: nothing cached, views kept
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    twin = copy.deepcopy(model)
    torch.testing.assert_close(eval_at(twin, x), eval_at(_fresh(model), x), rtol=0, atol=0)
    state = _scaled(model.state_dict(), 0.5)
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        model.load_state_dict(state)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(False)
    oracle = _fresh(twin)
    oracle.load_state_dict(state)
    with usnet.width(model, 0.5), torch.no_grad():
        torch.testing.assert_close(model(x), eval_at(oracle, x), rtol=0, atol=0)
