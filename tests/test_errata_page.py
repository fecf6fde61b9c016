"""docs/errata.md: every erratum the code cites has an item, and every test an item names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "errata.md"
# "ERRATA 2", "ERRATA 2/3" (source and tests), "docs/errata.md §2, §3" (notes) and "errata §8" (docs)
CITES = re.compile(r"ERRATA\s+(\d+(?:\s*/\s*\d+)*)|errata(?:\.md)?\s*(§\s*\d+(?:\s*,\s*§\s*\d+)*)")


def _items() -> dict[int, str]:
    """Item number -> its text, from the page's ``## N. title`` headings."""
    parts = re.split(r"^## (\d+)\. ", PAGE.read_text(), flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def _cited() -> dict[int, list[str]]:
    """Every cited erratum number, with the files citing it."""
    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("tests/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    out: dict[int, list[str]] = {}
    for f in files:
        for m in CITES.finditer(f.read_text()):
            nums = m[1] or m[2]
            for n in re.findall(r"\d+", nums):
                out.setdefault(int(n), []).append(str(f.relative_to(ROOT)))
    return out


def test_items_are_numbered_one_to_n() -> None:
    items = _items()
    assert list(items) == list(range(1, len(items) + 1))
    assert len(items) >= 8


def test_every_cited_erratum_has_an_item() -> None:
    cited = _cited()
    assert cited, "the source cites errata"
    missing = {n: files for n, files in cited.items() if n not in _items()}
    assert missing == {}


def test_every_listed_test_exists() -> None:
    for n, text in _items().items():
        shown = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", text.split("Shown by:", 1)[-1])
        assert "Shown by:" in text and shown, f"item {n} names no test"
        for path, name in shown:
            tree = ast.parse((ROOT / path).read_text())
            defs = {d.name for d in ast.walk(tree) if isinstance(d, ast.FunctionDef)}
            assert name in defs, f"item {n}: {path}::{name} does not exist"


def test_no_citation_points_outside_the_repository() -> None:
    for f in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("src/**/*.py")]:
        assert "shared/paper/ERRATA" not in f.read_text(), f
