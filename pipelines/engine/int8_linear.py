"""Int8 linear layers for the CPU: int8 weights (one scale per output row), activations quantised
per row at run time, the integer product in oneDNN.

This replaces `torch.ao.quantization.quantize_dynamic`, which is deprecated together with the
quantised tensor types it builds on. Two kernels compute the same integers:
- `onednn::qlinear_pointwise` on a weight packed once at load (the op PyTorch's x86 int8
  compilation path lowers to): packing the weight in oneDNN's blocked layout makes the small
  row counts of decoding 1.2-1.9x faster than the unpacked product (bench/int8_kernels.py);
- `torch._int_mm` where PyTorch is built without oneDNN's quantised ops. It is the kernel
  torchao's int8 configs use too; called directly it measured 1.3-10x faster than torchao's
  Int8DynamicActivationInt8WeightConfig here, without torchao's import-time warnings.
Per-row scales (weights and activations) are more accurate than quantize_dynamic's one scale
per tensor, and keep a row's result independent of the other rows in its batch.
"""

from __future__ import annotations

import functools
import platform

import torch

_QMAX = 127.0
_UINT8_ZERO = 128  # oneDNN's int8 product takes unsigned activations: a symmetric int8 value + 128


def packed_kernel_available() -> bool:
    """Whether oneDNN's quantised linear op is used here: on x86 CPUs with VNNI or AMX, where
    PyTorch's own int8 path uses it and where it was measured; elsewhere the unpacked product."""
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.onednn, "qlinear_prepack") and _cpu_has_int8_dot_product())


@functools.lru_cache(maxsize=1)
def _cpu_has_int8_dot_product() -> bool:
    # Without VNNI or AMX, oneDNN adds u8 x s8 pairs in saturating 16-bit sums (AVX2's
    # vpmaddubsw): on an AVX2-only AMD EPYC its results were off by a quarter of the output's scale.
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row: weight [N, K] ~= q [N, K] * scale [N, 1]."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp_(min=1e-12).div_(_QMAX)
    q = torch.round(weight / scale[:, None]).clamp_(-_QMAX, _QMAX).to(torch.int8)
    return q, scale


class Int8Linear(torch.nn.Module):
    """y = x @ W.T + b with W held as int8; x and y are float32."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 packed: bool | None = None):
        super().__init__()
        self.in_features = qweight.shape[1]
        self.out_features = qweight.shape[0]
        self.packed = packed_kernel_available() if packed is None else packed
        if self.packed:
            # The packed copy replaces the plain one (an opaque oneDNN tensor: not in state_dict).
            self.register_buffer("qweight", torch.ops.onednn.qlinear_prepack(qweight, None), persistent=False)
            self.register_buffer("weight_zero_points", torch.zeros(self.out_features, dtype=torch.int64),
                                 persistent=False)
        else:
            self.register_buffer("qweight", qweight)  # [N, K] int8
        self.register_buffer("scale", scale)  # [N] float32
        self.register_buffer("bias", None if bias is None else bias.float())

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None,
                    packed: bool | None = None) -> "Int8Linear":
        return cls(*quantize_rows(weight), bias, packed=packed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()
        x_scale = x2.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(_QMAX)  # [M, 1]
        xq = torch.round(x2 / x_scale).clamp_(-_QMAX, _QMAX)
        if self.packed:
            # Activation scale 1 and zero point 128: the op returns (integer product) x weight
            # scale, and the per-row activation scale is applied after, as for the other kernel.
            out = torch.ops.onednn.qlinear_pointwise(
                xq.add_(_UINT8_ZERO).to(torch.uint8), 1.0, _UINT8_ZERO, self.qweight, self.scale,
                self.weight_zero_points, None, 1.0, 0, torch.float32, "none", [], "")
            out.mul_(x_scale)
        else:
            # The weight passed transposed as a view ([K, N], column-major): oneDNN's fastest layout here.
            out = torch._int_mm(xq.to(torch.int8), self.qweight.t()).to(torch.float32)  # [M, N]
            out.mul_(x_scale).mul_(self.scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = "packed" if self.packed else "int_mm"
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 ({kernel})"
