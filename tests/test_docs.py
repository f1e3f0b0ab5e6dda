"""Every Python code block in README.md and docs/**/*.md runs as written.

A block is a program: it is executed, in a temporary directory, as the ``__main__`` module of a fresh
namespace, and must finish without raising; the ``test_*`` functions it defines (docs/testing.md) are
then called as pytest would. A block that only shows part of a program (it uses names
defined elsewhere, or top-level ``await``) says so with ``<!-- fragment -->`` on the line just above its
opening fence; it is then only compiled, with top-level ``await`` allowed. Displays that are not Python
programs (signatures, ``>>>`` transcripts, shell commands) take another fence: ``text``, ``pycon``,
``console``.

Blocks run in this process (a fresh module each), which keeps the 100-odd blocks to a few seconds; the
README's first program also runs in a real subprocess here, and the examples in tests/test_examples.py.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FRAGMENT = "<!-- fragment -->"
PYTHON_FENCES = {"python", "py", "python3"}
_FENCE = re.compile(r"^( *)(`{3,}|~{3,})\s*([\w+-]*)")  # indented inside a list item, too
_FENCED_TEXT = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)


@attrs.frozen(kw_only=True)
class Block:
    """One fenced Python block: where it is, its code, whether it is marked as a fragment."""

    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    fragment: bool

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    """The fenced Python blocks of one Markdown page, in order."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, language = len(opening.group(1)), opening.group(2), opening.group(3).lower()
        end = index + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        if language in PYTHON_FENCES:
            above = lines[index - 1].strip() if index else ""
            code = "\n".join(line[indent:] for line in lines[index + 1 : end]) + "\n"
            blocks.append(Block(page=page, line=index + 1, code=code, fragment=above == FRAGMENT))
        index = end + 1
    return blocks


def _closes(line: str, fence: str) -> bool:
    """Whether ``line`` closes a block opened by ``fence`` (as in CommonMark: the same character, at
    least as many, nothing else on the line; "``` text" does not close a block)."""
    bare = line.strip(" ")
    return bare.startswith(fence) and bare == fence[0] * len(bare)


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def compile_block(block: Block) -> types.CodeType:
    """Compile a block with its page and line in tracebacks (fragments may use top-level await)."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if block.fragment else 0
    padded = "\n" * block.line + block.code  # tracebacks then point at the page's own line numbers
    code: types.CodeType = compile(padded, str(block.page), "exec", flags=flags, dont_inherit=True)
    return code


def run_as_main(code: types.CodeType) -> None:
    """Execute ``code`` as the ``__main__`` module of a fresh namespace, as ``python file.py`` would.

    The fresh module stands in ``sys.modules["__main__"]`` while it runs, so that dataclasses, attrs
    and cattrs resolve the block's own annotations. Then the ``test_*`` functions the block defines
    (the examples of docs/testing.md) are called, as pytest would, and awaited when they are async.
    """
    module = types.ModuleType("__main__")
    module.__file__ = code.co_filename
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = module
    try:
        exec(code, module.__dict__)
        for name, value in list(module.__dict__.items()):
            if name.startswith("test_") and inspect.isfunction(value):
                outcome = value()
                if inspect.iscoroutine(outcome):
                    asyncio.run(outcome)
    finally:
        sys.modules["__main__"] = saved


def test_the_docs_have_blocks_of_both_kinds() -> None:
    assert any(block.fragment for block in BLOCKS)
    assert any(not block.fragment for block in BLOCKS)


def test_the_readme_starts_with_the_two_commands_of_a_fresh_machine() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = readme[readme.index("```") : readme.index("```", readme.index("```") + 3)]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:]]
    assert commands == ["python3 dev.py demo", "python3 dev.py test"]


def test_the_readmes_first_program_runs_and_exits_in_a_fresh_process(tmp_path: Path) -> None:
    first = next(block for block in BLOCKS if block.page.name == "README.md" and not block.fragment)
    script = tmp_path / "readme.py"
    script.write_text(first.code, encoding="utf-8")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("FLUX_DB", None)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert "completed" in done.stdout, done.stdout


def test_a_fragment_mark_is_only_seen_just_above_the_fence(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- fragment -->\n```python\nawait go()\n```\n\n<!-- fragment -->\n\n```python\nx = 1\n```\n"
        "```text\nnot python\n```\n````python\n```\nstill = 'inside'\n````\n"
        "- a list item:\n\n  <!-- fragment -->\n  ```python\n  if True:\n      await it()\n  ```\n"
        "```python\nx = 2\n``` text after a fence does not close it\ny = 3\n```\n",
        encoding="utf-8",
    )
    found = [(block.line, block.fragment, block.code) for block in python_blocks(page)]
    assert found == [
        (2, True, "await go()\n"),
        (8, False, "x = 1\n"),
        (14, False, "```\nstill = 'inside'\n"),
        (21, True, "if True:\n    await it()\n"),
        (25, False, "x = 2\n``` text after a fence does not close it\ny = 3\n"),
    ]


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_block_runs_as_written(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        code = compile_block(block)
    except SyntaxError as exc:
        raise AssertionError(
            f"{block.name}: not valid Python ({exc.msg}, line {exc.lineno}). A block that uses top-level "
            f"await is a fragment: put {FRAGMENT} on the line just above its fence; a signature or a "
            "transcript takes another fence (```text, ```pycon)."
        ) from exc
    if block.fragment:
        return  # compiled is all a fragment promises
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLUX_DB", raising=False)
    try:
        run_as_main(code)
    except SystemExit as exc:
        assert exc.code in (None, 0), f"{block.name}: the block exited with {exc.code!r}"
    except Exception as exc:
        raise AssertionError(
            f"{block.name}: this block raised {type(exc).__name__}: {exc}\n"
            f"Make it a complete program, or put {FRAGMENT} on the line just above its fence."
        ) from exc


def anchors(markdown: str) -> set[str]:
    """The GitHub-style anchors of a page's headings."""
    text = _FENCED_TEXT.sub("", markdown)
    return {
        re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-") for title in _HEADING.findall(text)
    }


def _has_anchor(page: Path, anchor: str) -> bool:
    if not anchor or page.suffix != ".md":
        return True
    return anchor in anchors(page.read_text(encoding="utf-8"))


@pytest.mark.parametrize("page", PAGES, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCED_TEXT.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists() or not _has_anchor(linked, anchor):
            broken.append(target)
    assert not broken, f"broken links in {page.name}: {broken}"
