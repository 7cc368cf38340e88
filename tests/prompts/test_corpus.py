"""Prompt rows from source files: cuts at function boundaries, FIM middles that come from the file."""

from pipelines.prompts.corpus import (
    completion_rows,
    fim_rows,
    humaneval_rows,
    language_of,
    prompts_from_file,
)

SOURCE = '''import math


def area(r):
    """Area of a circle."""
    return math.pi * r * r


class Shape:
    def scale(self, k):
        self.k = k
        return self
'''


def test_completion_prompts_end_where_the_body_starts():
    rows = {r.id: r for r in completion_rows("geo.py", SOURCE, "python")}
    assert set(rows) == {"completion/geo.py/area", "completion/geo.py/Shape.scale"}
    area = rows["completion/geo.py/area"]
    assert area.prompt.endswith('    """Area of a circle."""\n')
    assert area.reference == "    return math.pi * r * r\n"
    assert area.prompt + area.reference in SOURCE
    scale = rows["completion/geo.py/Shape.scale"]
    assert scale.prompt.endswith("    def scale(self, k):\n") and scale.reference.startswith("        self.k = k")


def test_fim_rows_reassemble_into_the_file():
    rows = fim_rows("geo.py", SOURCE, "python", per_file=5, seed=0)
    assert rows
    for r in rows:
        assert r.kind == "fim" and r.middle and r.middle.endswith("\n")
        assert r.prefix + r.middle + r.suffix in SOURCE


def test_fim_rows_are_reproducible_from_the_seed():
    assert fim_rows("geo.py", SOURCE, "python", 2, seed=3) == fim_rows("geo.py", SOURCE, "python", 2, seed=3)


def test_other_languages_cut_at_a_line_boundary():
    js = "function f(a) {\n  const b = a + 1;\n  return b;\n}\nmodule.exports = f;\n"
    rows = prompts_from_file("lib/f.js", js)
    (completion,) = [r for r in rows if r.kind == "completion"]
    assert completion.language == "javascript" and completion.prompt.endswith("\n")
    assert completion.prompt + completion.reference == js


def test_unparsable_python_gives_no_function_rows():
    assert completion_rows("bad.py", "def broken(:\n    pass\n", "python") == []


def test_languages_by_extension():
    assert [language_of(p) for p in ("a.py", "b.RS", "c.unknown", "Makefile")] == ["python", "rust", "text", "text"]


def test_humaneval_has_164_problems_with_prompts_and_solutions():
    rows = humaneval_rows()
    assert len(rows) == 164 and len({r.id for r in rows}) == 164
    assert all(r.prompt and r.reference and r.kind == "humaneval" for r in rows)
