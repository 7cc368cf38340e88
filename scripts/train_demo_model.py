"""Train the bundled demo model: a small StarCoder2-architecture model on Python standard-library code.

    python scripts/train_demo_model.py --out pipelines/assets/demo-model --minutes 8

It is a demo and test model (a few million parameters, a few minutes of CPU training): its
output looks like Python, not like working code. Real quality needs the real StarCoder2 weights.
The modules the sample corpus takes its prompts from are held out of the training data.

The vocabulary is StarCoder2's full 49,152 tokens, but the training softmax runs over the tokens
that occur in the training data only (about a third of them): the output layer is most of the
compute at this size, and tokens that never occur would only be pushed down. Tokens outside
that set keep their initial (small) embeddings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from devtools.model_builder import (  # noqa: E402
    parameter_count,
    save_model_dir,
    starcoder2_config,
)
from pipelines.engine.tokenizer import BUNDLED_TOKENIZER_DIR, CodeTokenizer  # noqa: E402

# Prompts of the bundled sample corpus come from these modules; the model never sees them.
HELD_OUT_MODULES = (
    "bisect", "colorsys", "difflib", "fnmatch", "glob", "heapq", "shlex", "statistics", "string", "textwrap",
)
DEMO_SHAPE = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, sliding_window=1024, max_position_embeddings=4096)


def training_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [p for p in sorted(stdlib.glob("*.py")) if p.stem not in HELD_OUT_MODULES and not p.stem.startswith("_")]


def token_stream(tokenizer: CodeTokenizer, files: list[Path]) -> torch.Tensor:
    ids: list[int] = []
    for path in files:
        ids.extend(tokenizer.encode(path.read_text(encoding="utf-8", errors="replace")))
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="pipelines/assets/demo-model")
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tokenizer = CodeTokenizer(BUNDLED_TOKENIZER_DIR / "tokenizer.json")
    files = training_files()
    stream = token_stream(tokenizer, files)
    n_seq = len(stream) // args.seq_len
    sequences = stream[: n_seq * args.seq_len].view(n_seq, args.seq_len)
    print(f"{len(files)} files, {len(stream):,} tokens, {n_seq} sequences of {args.seq_len}", flush=True)

    from transformers import Starcoder2ForCausalLM

    model = Starcoder2ForCausalLM(starcoder2_config("tiny", **DEMO_SHAPE))
    print(f"{parameter_count(model):,} parameters", flush=True)
    # Softmax over the tokens present in the data: targets are remapped into that subset.
    present = torch.unique(stream)
    remap = torch.full((model.config.vocab_size,), -100, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    print(f"training softmax over {len(present):,} of {model.config.vocab_size:,} tokens", flush=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.95))
    budget = args.minutes * 60
    started = time.monotonic()
    step, tokens_seen, losses = 0, 0, []
    model.train()
    while time.monotonic() - started < budget:
        batch = sequences[torch.randint(0, n_seq, (args.batch,))]
        # Linear warm-up for 30 steps, then cosine decay over the time budget.
        progress = (time.monotonic() - started) / budget
        lr = args.lr * min(1.0, (step + 1) / 30) * 0.5 * (1 + torch.cos(torch.tensor(progress * 3.14159)).item())
        for group in optimizer.param_groups:
            group["lr"] = lr
        hidden = model.model(input_ids=batch).last_hidden_state[:, :-1]  # [B, S-1, H]
        logits = hidden @ model.lm_head.weight[present].T  # [B, S-1, V_present]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(present)), remap[batch[:, 1:]].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens_seen += batch.numel()
        losses.append(loss.item())
        if step % 10 == 0:
            print(f"step {step} loss {sum(losses[-10:]) / 10:.3f} lr {lr:.2e} "
                  f"{tokens_seen / (time.monotonic() - started):.0f} tok/s", flush=True)

    model.eval()
    model = model.to(torch.float16)  # half the bytes; loaded back as float32 on CPU
    out = save_model_dir(model, args.out)
    report = {
        "architecture": "Starcoder2ForCausalLM",
        "shape": DEMO_SHAPE,
        "parameters": parameter_count(model),
        "training_data": f"{len(files)} Python {sys.version.split()[0]} standard-library modules "
                         f"({len(stream):,} tokens); held out: {', '.join(HELD_OUT_MODULES)}",
        "steps": step,
        "tokens_seen": tokens_seen,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "final_loss": round(sum(losses[-20:]) / min(20, len(losses)), 3),
        "softmax_tokens": len(present),
        "command": "python scripts/train_demo_model.py " + " ".join(argv or sys.argv[1:]),
        "seed": args.seed,
    }
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
