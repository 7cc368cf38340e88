"""int8 on the CPU: the engine's Int8Linear against the deprecated torch.ao quantize_dynamic
and, where installed, torchao's int8 configs, side by side in one run.

    python bench/int8_kernels.py [--repeats 5]

1. one linear layer of StarCoder2-3B's MLP (3072 -> 12288) at 1 to 4096 rows: GFLOP/s of
   float32, bfloat16, quantize_dynamic, torchao (if importable) and Int8Linear with each of its
   kernels (the packed oneDNN weight, and torch._int_mm);
2. the engine alone on the 111M benchmark model (bench/run.py's), 64 prompts, 32 new tokens:
   tokens/s with Int8Linear's two kernels and with quantize_dynamic on the same float32 weights.
Writes int8_kernels.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def median_seconds(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def deprecated_dynamic(module):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its deprecation warnings are why it is replaced
        return torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)


def layer_gflops(repeats: int) -> dict:
    import torch

    from pipelines.engine.int8_linear import Int8Linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(3072, 12288)
    variants = {
        "float32": linear,
        "bfloat16": torch.nn.Linear(3072, 12288).to(torch.bfloat16),
        "quantize_dynamic (deprecated)": deprecated_dynamic(torch.nn.Sequential(linear)),
        "Int8Linear (packed)": Int8Linear.from_weight(linear.weight.data, linear.bias.data, packed=True),
        "Int8Linear (int_mm)": Int8Linear.from_weight(linear.weight.data, linear.bias.data, packed=False),
    }
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            quantize_,
        )

        torchao_linear = torch.nn.Sequential(torch.nn.Linear(3072, 12288))
        torchao_linear[0].load_state_dict(linear.state_dict())
        quantize_(torchao_linear, Int8DynamicActivationInt8WeightConfig())
        variants["torchao Int8DynamicActivationInt8Weight"] = torchao_linear
    except ImportError:
        pass
    results = {}
    with torch.inference_mode():
        for rows in (1, 4, 16, 64, 512, 4096):
            x = torch.randn(rows, 3072)
            flops = 2 * rows * 3072 * 12288
            results[rows] = {}
            for name, module in variants.items():
                inp = x.to(torch.bfloat16) if name == "bfloat16" else x
                results[rows][name] = round(flops / median_seconds(lambda: module(inp), repeats) / 1e9, 1)
    return results


def engine_tokens_per_s(model_dir: str, prompts: list[str], repeats: int) -> dict:
    import torch

    from pipelines.engine import int8_linear
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import GenerationParams, ModelSpec

    params = GenerationParams(max_output_length=32)
    results = {}
    for name in ("Int8Linear (packed)", "Int8Linear (int_mm)", "quantize_dynamic (deprecated)"):
        dtype = "float32" if name.startswith("quantize_dynamic") else "int8"
        kernel_available = int8_linear.packed_kernel_available
        if name == "Int8Linear (int_mm)":  # the fallback kernel, as on a build without oneDNN's op
            int8_linear.packed_kernel_available = lambda: False
        try:
            engine = GenerationEngine.load(ModelSpec(source=model_dir, dtype=dtype, device="cpu"))
        finally:
            int8_linear.packed_kernel_available = kernel_available
        if dtype == "float32":
            engine.decoder.model = deprecated_dynamic(engine.decoder.model)
        torch.manual_seed(0)
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            out = engine.complete(prompts, params, 16)
            rates.append(sum(r[0].completion_tokens for r in out) / (time.perf_counter() - started))
        results[name] = round(statistics.median(rates), 1)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from devtools.model_builder import build_random_model
    from pipelines.models import bundled

    torch.set_num_threads(os.cpu_count())
    results = {"layer_3072x12288_gflops": layer_gflops(args.repeats)}
    print(json.dumps(results, indent=2), flush=True)
    model_dir = str(build_random_model(Path(tempfile.mkdtemp(prefix="bench-int8-")) / "model", "bench", seed=1234))
    prompts = list(pd.read_parquet(bundled.SAMPLE_PROMPTS).sort_values("id")["prompt"])[: args.prompts]
    results["engine_111m_tokens_per_s"] = engine_tokens_per_s(model_dir, prompts, max(1, args.repeats // 2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_kernels.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
