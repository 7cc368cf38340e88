"""Per-check cost of the evaluation sandbox: median wall time of one trivial HumanEval-style check.

    python3 bench/sandbox_overhead.py --runs 50

Compares the previous sandbox (a plain `python -I` subprocess with rlimits and an audit hook)
with the current one in each backend: weak (harness, seccomp, own uid; no namespaces), bwrap and
unshare. Runs one check at a time; the program itself does nearly nothing, so the numbers are
the sandbox's own cost (interpreter start included).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.evaluation.sandbox import (  # noqa: E402
    Check,
    SandboxLimits,
    SandboxSettings,
    _execute,
    probe,
)

SOLUTION = "def add(a, b):\n    return a + b\n"
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
# The previous sandbox's audit hook, in short: its cost is a few microseconds per event.
OLD_GUARD = "import sys\nsys.addaudithook(lambda event, args: None)\n"


def old_plain_subprocess() -> bool:
    """What run_program did before: a script in a temporary directory, python -I, rlimits, communicate."""

    def limit():
        resource.setrlimit(resource.RLIMIT_CPU, (10, 12))
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    with tempfile.TemporaryDirectory(prefix="sandbox-") as workdir:
        script = Path(workdir) / "program.py"
        script.write_text(OLD_GUARD + SOLUTION + "\n" + TEST + "\ncheck(add)\n")
        proc = subprocess.Popen([sys.executable, "-I", str(script)], cwd=workdir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=limit,
                                start_new_session=True)
        proc.communicate(timeout=10)
    return proc.returncode == 0


def new(backend: str):
    settings = SandboxSettings(backend=backend, allow_weak=True)

    def run() -> bool:
        return _execute(Check(SOLUTION, TEST, "add"), SandboxLimits(), settings, backend).passed

    return run


def median_ms(run, runs: int) -> float:
    run()  # warm the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        assert run(), "the check did not pass"
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args(argv)
    modes = {"previous: plain subprocess": old_plain_subprocess, "weak (no namespaces)": new("weak")}
    for backend in ("bwrap", "unshare"):
        problem = probe(backend)
        if problem is None:
            modes[backend] = new(backend)
        else:
            print(f"{backend}: skipped ({problem})")
    results = {name: median_ms(run, args.runs) for name, run in modes.items()}
    base = results["previous: plain subprocess"]
    for name, ms in results.items():
        print(f"{name:28s} {ms:7.1f} ms per check (median of {args.runs})   +{ms - base:5.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
