"""Weight-only int8 quantization (per output channel, symmetric), so the 15B model fits a 24 GB GPU.

Linear weights become int8 with one bf16/fp32 scale per output row; activations stay in the model dtype. Under
`torch.compile` the dequantisation fuses into the matmul, so a batch-1 decode reads half the bytes (gpt-fast's
WeightOnlyInt8Linear). The input embedding stays as it is: a decode step reads one row of it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nemotron4.model import Nemotron4


class Int8Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach()
        q = cls(w.shape[1], w.shape[0], w.dtype, w.device)
        scales = w.float().abs().amax(dim=1).clamp(min=1e-8) / 127.0  # (out,)
        q.weight.copy_(torch.round(w.float() / scales[:, None]).clamp(-127, 127).to(torch.int8))
        q.scales.copy_(scales.to(w.dtype))
        return q


@torch.no_grad()
def quantize_int8(model: Nemotron4) -> Nemotron4:
    """Replace every nn.Linear (blocks and output projection) by Int8Linear, in place."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8Linear.from_linear(child))
    return model
