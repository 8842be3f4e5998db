"""Fold eval-mode BatchNorm layers into the convolutions before them.

In eval mode a BatchNorm after a convolution is a per-channel affine map, so it can be
written into the convolution's weights and bias: the network computes the same function
(up to float rounding) with one pass over the activations less per layer. On
EfficientNet-Lite0 (49 BatchNorms) that made CPU inference about 1.15x faster.

torch.fx's fusion does not see EfficientNet-Lite's padded Conv2d subclass, so pairs are
found by position instead: a BatchNorm2d registered right after a sibling Conv2d with as
many output channels. That guess is checked: the folded copy must reproduce the
original's output on a probe batch, else the original is kept unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

PROBE_TOLERANCE = 1e-4  # max |difference| relative to max |output| on the probe batch


def _conv_bn_pairs(model: Any) -> list[tuple[str, Any, Any]]:
    """(bn name, conv, bn) for every BatchNorm2d registered right after a sibling Conv2d."""
    import torch

    pairs, prev = [], None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d) and prev is not None:
            conv_name, conv = prev
            same_parent = conv_name.rpartition(".")[0] == name.rpartition(".")[0]
            if (same_parent and conv.out_channels == module.num_features
                    and module.affine and module.track_running_stats):
                pairs.append((name, conv, module))
        if isinstance(module, torch.nn.Conv2d | torch.nn.BatchNorm2d):
            prev = (name, module) if isinstance(module, torch.nn.Conv2d) else None
    return pairs


def _fold(conv: Any, bn: Any) -> None:
    import torch

    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = torch.nn.Parameter(conv.weight.detach() * scale[:, None, None, None], requires_grad=False)
    conv.bias = torch.nn.Parameter((bias - bn.running_mean) * scale + bn.bias.detach(), requires_grad=False)


def fold_batchnorm(model: Any, probe: Any) -> tuple[Any, int]:
    """A copy of eval-mode `model` with conv+BatchNorm pairs folded, if it reproduces model on `probe`.

    Args:
        model: an eval-mode torch module.
        probe: an input batch, e.g. (2, 3, 224, 224) noise, to compare outputs on.

    Returns:
        (the folded copy, pairs folded), or (model itself, 0) when nothing folds or the
        folded copy disagrees with it.
    """
    import torch

    folded = copy.deepcopy(model)
    pairs = _conv_bn_pairs(folded)
    if not pairs:
        return model, 0
    for name, conv, bn in pairs:
        _fold(conv, bn)
        parent, _, attr = name.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, attr, torch.nn.Identity())
    with torch.inference_mode():
        try:
            want, got = model(probe), folded(probe)
        except RuntimeError:
            return model, 0
    if want.shape != got.shape or (want - got).abs().max() > PROBE_TOLERANCE * want.abs().max().clamp(min=1e-6):
        return model, 0
    return folded, len(pairs)


__all__ = ["fold_batchnorm"]
