"""Stop strings per language: where a completion of one function or block has ended.

The Python preset is the HumanEval harness's (a new top-level def, class, if, print or
comment). The others follow the same idea: a new top-level declaration starts.
"""

from __future__ import annotations

STOP_PRESETS: dict[str, tuple[str, ...]] = {
    "python": ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nif "),
    "javascript": ("\nfunction ", "\nclass ", "\nconst ", "\nexport ", "\nmodule.exports", "\n//"),
    "typescript": ("\nfunction ", "\nclass ", "\nconst ", "\nexport ", "\ninterface ", "\n//"),
    "java": ("\n    public ", "\n    private ", "\n    protected ", "\n}\n"),
    "go": ("\nfunc ", "\ntype ", "\n//"),
    "rust": ("\nfn ", "\npub fn ", "\nimpl ", "\n#[", "\n//"),
    "c": ("\nint ", "\nvoid ", "\nstatic ", "\n#include", "\n//"),
    "cpp": ("\nint ", "\nvoid ", "\nstatic ", "\n#include", "\nclass ", "\n//"),
    "shell": ("\nfunction ", "\n#"),
}


def stop_strings(preset: str, extra: list[str] | tuple[str, ...] = ()) -> tuple[str, ...]:
    """The preset's stop strings followed by `extra`, without duplicates; '' means no preset."""
    if preset and preset not in STOP_PRESETS:
        raise ValueError(f"stopPreset must be one of {', '.join(sorted(STOP_PRESETS))} or '', got {preset!r}")
    return tuple(dict.fromkeys([*STOP_PRESETS.get(preset, ()), *extra]))
