"""Int8 Linear layers for transformer text encoders, close enough to fp32 to swap in.

A 2-core AVX2 machine runs MiniLM's fp32 matrix products near its peak already; only
int8 arithmetic roughly doubles what it can do. PyTorch's stock dynamic quantization
loses too much here (mean cosine to fp32 0.93 on ml100k-mm): it quantizes activations
to 7 bits per tensor, and a few hidden channels carry outliers many times larger than
the rest. Two changes bring the cosine above 0.99:

- SmoothQuant-style balancing: each input channel j is divided by s_j and the weights'
  column j multiplied by it (x W^T is unchanged in exact arithmetic), with
  s_j = max|x_j|^alpha / max|W_:j|^(1-alpha), so outlier channels move into the weights,
  which are quantized per output row and tolerate them.
- 8-bit activations with 7-bit weights, instead of 7-bit activations with 8-bit weights:
  the AVX2 kernel sums pairs of u8 x s8 products in int16, and 255 * 63 * 2 still fits.

The quantized-tensor functions used here are deprecated upstream (not yet removed in the
pinned torch); should they go, `featurize.text_int8: false` keeps the fp32 path.

max|x_j| comes from a fixed calibration corpus (CALIBRATION_TEXTS), never from the data
being encoded, so an item's vector does not depend on which other items were encoded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

SMOOTH_ALPHA = 0.7  # 0.5: mean cosine 0.984, 0.7: 0.996, none: 0.991 (96 ml100k-mm texts vs fp32)
WEIGHT_BITS = 7
QUANT_TAG = f"int8-w{WEIGHT_BITS}a8-smooth{SMOOTH_ALPHA}"  # part of the encoder version: cached fp32 rows never mix in

# Varied registers and lengths, so every channel that carries outliers shows them.
CALIBRATION_TEXTS = (
    "A retired detective is drawn back into one last case when his former partner disappears.",
    "Two teenagers from rival families fall in love during a long, hot summer in a small coastal town.",
    "The documentary follows a team of scientists through a winter at a remote Antarctic research station.",
    "In a future where memories can be bought and sold, a clerk discovers a memory that is not his own.",
    "An animated musical about a mouse who dreams of becoming a great chef in Paris.",
    "Stainless steel kettle, 1.7 litres, with automatic shut-off and a removable limescale filter.",
    "The central bank raised interest rates by a quarter point, citing persistent inflation.",
    "Heavy rain is expected across the north on Tuesday, with strong winds along the coast.",
    "She said: 'I never wanted any of this!' and slammed the door behind her.",
    "Quarterly revenue grew 12% to $4.1 billion, while operating costs fell for the third year in a row.",
    "Preheat the oven to 200 C, season the chicken, and roast for forty minutes until golden.",
    "A cat sleeps on the sofa.",
    "War, peace, love, betrayal: an epic spanning three generations of a family in nineteenth-century Russia.",
    "The software update fixes a crash on start-up and improves battery life on older phones.",
    "Comedy. Drama. Thriller. Horror. Sci-Fi. Western. Film-Noir. Children's. Musical. Documentary.",
    "After the plane crashes on an uncharted island, the survivors must learn to trust each other to stay "
    "alive, while strange signals from the jungle suggest they are not alone, and a storm is coming.",
)


def input_absmax(model: Any, run_calibration: Callable[[], object]) -> dict[str, Any]:
    """Per-channel max |input| of every nn.Linear in model while `run_calibration()` runs.

    Returns:
        {module name: (in_features,) tensor}.
    """
    import torch

    amax: dict[str, Any] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(_: Any, inputs: tuple[Any, ...], __: Any) -> None:
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)  # (B, T, in) -> (in,)
            amax[name] = torch.maximum(amax[name], x) if name in amax else x

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            run_calibration()
    finally:
        for h in handles:
            h.remove()
    return amax


def _smoothed_int8_linear(linear: Any, absmax: Any) -> Any:
    """An nn.Linear -> an equivalent module computing in int8 (see the module docstring).

    The new module keeps no reference to `linear`, so its fp32 weights can be freed.
    """
    import torch

    class SmoothedInt8Linear(torch.nn.Module):
        def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, absmax: torch.Tensor) -> None:
            super().__init__()
            w = weight.detach().float()  # (out, in)
            s = absmax.clamp(min=1e-5) ** SMOOTH_ALPHA / w.abs().amax(0).clamp(min=1e-5) ** (1 - SMOOTH_ALPHA)
            w = w * s[None, :]  # column j x s_j; the input is divided by s_j below
            scale = (w.abs().amax(1) / (2 ** (WEIGHT_BITS - 1) - 1)).clamp(min=1e-8).double()  # per output row
            with warnings.catch_warnings():  # the deprecation notice above, once per layer otherwise
                warnings.simplefilter("ignore", UserWarning)
                qw = torch.quantize_per_channel(w, scale, torch.zeros_like(scale, dtype=torch.long), 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float())
            self.inv_s: torch.Tensor
            self.register_buffer("inv_s", (1.0 / s).float())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x * self.inv_s).float()  # (..., in)
            return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=False)  # (..., out)

    return SmoothedInt8Linear(linear.weight, linear.bias, absmax)


def quantize_linears(model: Any, run_calibration: Callable[[], object]) -> int:
    """Replace, in place, every nn.Linear of model seen in calibration by its int8 version.

    Args:
        model: an eval-mode torch module (a Hugging Face encoder).
        run_calibration: runs the fp32 model on CALIBRATION_TEXTS (the caller tokenizes).

    Returns:
        How many layers were replaced.
    """
    amax = input_absmax(model, run_calibration)
    for name, absmax in amax.items():
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, attr, _smoothed_int8_linear(model.get_submodule(name), absmax))
    return len(amax)


__all__ = ["CALIBRATION_TEXTS", "QUANT_TAG", "input_absmax", "quantize_linears"]
