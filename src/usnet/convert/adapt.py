"""Classes whose forward cannot slim as written, swapped (in the converted copy) for subclasses
that compute the same with forwards that can.

- torchvision's Swin ``PatchMerging`` (v1, v2) gathers its 2x2 patches in a function hidden from
  tracing (``torch.fx.wrap``): its subclasses gather them in the forward, where the concatenation
  of four copies of the channels shows.
- torchvision's ``VisionTransformer`` reshapes its patches with ``self.hidden_dim``, a
  hard-coded embedding width: its subclass flattens them instead.
- ``nn.TransformerEncoderLayer`` and ``nn.TransformerEncoder`` take a fused fast path in eval
  mode (``torch._transformer_encoder_layer_fwd`` with the full in-projection weights, nested
  tensors for padding masks) that would bypass the slimmed weights, and their checks for it
  cannot be traced: their subclasses always run the slow path (the same computation; padded
  positions then hold what the slow path computes, where the fused path writes zeros).

Each subclass's ``to_dense`` gives the dense export its original class back (with the
narrower width's attributes), where the original class can run the narrower network.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.transformer import _detect_is_causal_mask, _get_seq_len
from torchvision.models.swin_transformer import PatchMerging, PatchMergingV2
from torchvision.models.vision_transformer import VisionTransformer


def adapt(model: nn.Module) -> nn.Module:
    """Swap the classes above for their subclasses, in place (``model`` is the converted copy
    or a network built for a checkpoint's recorded conversion); returns ``model``."""
    swaps = _swaps()
    for m in model.modules():  # exact classes: a subclass's own forward is another network
        sub = swaps.get(type(m))
        if sub is not None:
            m.__class__ = sub
    return model


def _swaps() -> dict[type, type]:
    return {
        nn.TransformerEncoderLayer: EncoderLayer,
        nn.TransformerEncoder: Encoder,
        VisionTransformer: TorchvisionViT,
        PatchMerging: SwinPatchMerging,
        PatchMergingV2: SwinPatchMergingV2,
    }


class EncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` that always runs its slow path (see the module doc)."""

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        src_key_padding_mask, src_mask = _masks(src, src_key_padding_mask, src_mask, "src_mask")
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def to_dense(self, stats: bool = True) -> nn.Module:
        """torch's own class again where its attention is ``nn.MultiheadAttention``."""
        if type(self.self_attn) is nn.MultiheadAttention:
            self.__class__ = cast(Any, nn.TransformerEncoderLayer)
        return self


class Encoder(nn.TransformerEncoder):
    """``nn.TransformerEncoder`` without nested tensors (see the module doc)."""

    def forward(
        self,
        src: Tensor,
        mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        src_key_padding_mask, mask = _masks(src, src_key_padding_mask, mask, "mask")
        causal = is_causal is True
        if mask is not None:
            first: Any = self.layers[0]
            seq_len = _get_seq_len(src, first.self_attn.batch_first)
            causal = _detect_is_causal_mask(mask, is_causal, seq_len)
        output = src
        for layer in self.layers:
            output = layer(
                output, src_mask=mask, is_causal=causal, src_key_padding_mask=src_key_padding_mask
            )
        return output if self.norm is None else self.norm(output)

    def to_dense(self, stats: bool = True) -> nn.Module:
        """torch's own class again (without nested tensors, so padded positions match)."""
        if all(type(layer) is nn.TransformerEncoderLayer for layer in self.layers):
            self.__class__ = cast(Any, nn.TransformerEncoder)
            self.use_nested_tensor = False
        return self


class TorchvisionViT(VisionTransformer):
    """torchvision's ``VisionTransformer`` whose patches are flattened, not reshaped to the
    hard-coded ``hidden_dim``."""

    def _process_input(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        torch._assert(h == self.image_size, f"Wrong image height! Expected {self.image_size}")
        torch._assert(w == self.image_size, f"Wrong image width! Expected {self.image_size}")
        return self.conv_proj(x).flatten(2).permute(0, 2, 1)

    def to_dense(self, stats: bool = True) -> nn.Module:
        """torchvision's class again, with the narrower width's ``hidden_dim``."""
        self.__class__ = VisionTransformer
        self.hidden_dim = self.conv_proj.out_channels
        return self


def _merge_patches(x: Tensor) -> Tensor:
    """torchvision's ``_patch_merging_pad``: each 2x2 patch's four channel vectors, concatenated."""
    h, w = x.shape[-3], x.shape[-2]
    x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
    parts = [x[..., 0::2, 0::2, :], x[..., 1::2, 0::2, :], x[..., 0::2, 1::2, :], x[..., 1::2, 1::2, :]]
    return torch.cat(parts, -1)


class SwinPatchMerging(PatchMerging):
    """torchvision's Swin ``PatchMerging`` with its patches gathered where tracing sees them."""

    def forward(self, x: Tensor) -> Tensor:
        return self.reduction(self.norm(_merge_patches(x)))

    def to_dense(self, stats: bool = True) -> nn.Module:
        """torchvision's class again, of the narrower width."""
        self.__class__ = PatchMerging
        self.dim = self.reduction.in_features // 4
        return self


class SwinPatchMergingV2(PatchMergingV2):
    """torchvision's Swin v2 ``PatchMergingV2`` with its patches gathered where tracing sees them."""

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.reduction(_merge_patches(x)))

    def to_dense(self, stats: bool = True) -> nn.Module:
        """torchvision's class again, of the narrower width."""
        self.__class__ = PatchMergingV2
        self.dim = self.reduction.in_features // 4
        return self


def _masks(
    src: Tensor, padding: Tensor | None, mask: Tensor | None, mask_name: str
) -> tuple[Tensor | None, Tensor | None]:
    """The key-padding and attention masks in the canonical form torch's own encoder forwards
    give them (boolean masks become float ones of ``src``'s dtype)."""
    padding = F._canonical_mask(
        mask=padding,
        mask_name="src_key_padding_mask",
        other_type=F._none_or_dtype(mask),
        other_name=mask_name,
        target_type=src.dtype,
    )
    mask = F._canonical_mask(
        mask=mask,
        mask_name=mask_name,
        other_type=None,
        other_name="",
        target_type=src.dtype,
        check_other=False,
    )
    return padding, mask
