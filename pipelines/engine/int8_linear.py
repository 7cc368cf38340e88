"""Int8 linear layers for the CPU: int8 weights (one scale per output row), activations quantised
per row at run time, the product on `torch._int_mm` (oneDNN's VNNI int8 GEMM on x86).

This replaces `torch.ao.quantization.quantize_dynamic`, which is deprecated together with the
quantised tensor types it builds on. `_int_mm` is the kernel torchao's int8 configs use too;
called directly it measured 1.3-10x faster than torchao's Int8DynamicActivationInt8WeightConfig
here, without torchao's import-time warnings. Per-row weight scales are also more accurate
than quantize_dynamic's one scale per tensor.
"""

from __future__ import annotations

import torch

_QMAX = 127.0


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: weight [N, K] ~= q [N, K] * scale [N, 1]."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp_(min=1e-12).div_(_QMAX)
    q = torch.round(weight / scale[:, None]).clamp_(-_QMAX, _QMAX).to(torch.int8)
    return q, scale


class Int8Linear(torch.nn.Module):
    """y = x @ W.T + b with W held as int8; x and y are float32."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features = qweight.shape[1]
        self.out_features = qweight.shape[0]
        self.register_buffer("qweight", qweight)  # [N, K] int8
        self.register_buffer("scale", scale)  # [N] float32
        self.register_buffer("bias", None if bias is None else bias.float())

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> "Int8Linear":
        return cls(*quantize_rows(weight), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()
        x_scale = x2.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(_QMAX)  # [M, 1]
        xq = torch.round(x2 / x_scale).clamp_(-_QMAX, _QMAX).to(torch.int8)
        # The weight passed transposed as a view ([K, N], column-major): oneDNN's fastest layout here.
        out = torch._int_mm(xq, self.qweight.t()).to(torch.float32)  # [M, N]
        out.mul_(x_scale).mul_(self.scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"
