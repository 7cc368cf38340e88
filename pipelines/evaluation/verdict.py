"""From what came out of the sandbox to the stored result: status and a bounded, trusted detail.

The harness reports JSON lines; the program runs in the same process and can write lines of its
own, so nothing in them is taken as text. A verdict contributes only: passed or not, the name of
a builtin exception class (checked against this interpreter's builtins), whether it was a
subclass, and where it was raised (solution, test or check, with a line number within the
source). The detail is composed here from those fields and the trusted test source: for a
failing test line, that line of the problem's test. Exception messages, program output and
stderr written after the program started are never read. Before the program starts, stderr and
setup errors come from bubblewrap, unshare or the harness's own setup, and are kept (bounded).
"""

from __future__ import annotations

import builtins
import json
import signal

DETAIL_CHARS = 200
_REPORT_LINES = 8
_BUILTIN_EXCEPTIONS = frozenset(
    name for name, obj in vars(builtins).items() if isinstance(obj, type) and issubclass(obj, BaseException)
)
_WHERE = ("solution", "test", "check")


def _lines(report: bytes) -> list[dict]:
    events = []
    for raw in report.split(b"\n")[:_REPORT_LINES]:
        try:
            event = json.loads(raw[:4096])
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def exit_signal(returncode: int) -> int | None:
    """The signal that ended the program: Popen's negative code, or bwrap's/unshare's 128 + n."""
    if returncode < 0:
        return -returncode
    if 128 < returncode < 128 + 65:
        return returncode - 128
    return None


def describe_exception(verdict: dict, solution: str, test: str, entry_point: str | None) -> str:
    name = verdict.get("exception")
    label = name if isinstance(name, str) and name in _BUILTIN_EXCEPTIONS else "an exception"
    if label != "an exception" and verdict.get("subclass") is True:
        label = f"{label} subclass"
    where, line = verdict.get("where"), verdict.get("line")
    sources = {"solution": solution, "test": test, "check": f"check({entry_point})"}
    if where not in _WHERE or type(line) is not int or not 1 <= line <= len(sources[where].splitlines()):
        return label
    if where == "test":
        text = " ".join(test.splitlines()[line - 1].split())
        return f"{label} at test line {line}: {text}"[:DETAIL_CHARS]
    if where == "check":
        return f"{label} in check({entry_point})"[:DETAIL_CHARS]
    return f"{label} in the solution, line {line}"


def result_fields(report: bytes, stderr: bytes, returncode: int, timed_out: bool, limits, solution: str,
                  test: str, entry_point: str | None) -> tuple[str, str]:
    """(status, detail): status is passed, failed, timeout or error (the sandbox did not start)."""
    if timed_out:
        return "timeout", f"killed after {limits.timeout_s}s"
    events = _lines(report)
    kinds = [e.get("event") for e in events]
    if "started" not in kinds:
        for event in events:
            if event.get("event") == "setup_failed":
                return "error", f"sandbox setup failed: {str(event.get('error'))[:DETAIL_CHARS]}"
        tail = stderr.decode("utf-8", "replace").strip()[-DETAIL_CHARS:]
        return "error", f"the sandbox did not start (exit code {returncode}): {tail}"
    verdicts = events[kinds.index("started") + 1:]
    verdict = next((e for e in verdicts if e.get("event") == "verdict"), None)
    if verdict is not None:
        if verdict.get("outcome") == "passed":
            return "passed", ""
        return "failed", describe_exception(verdict, solution, test, entry_point)
    sig = exit_signal(returncode)
    if sig == signal.SIGXCPU:
        return "timeout", f"CPU time limit of {limits.cpu_s}s exceeded"
    if sig is not None:
        return "failed", f"killed by signal {sig} ({_signal_name(sig)})"
    return "failed", f"exited with code {returncode} before the check finished"
