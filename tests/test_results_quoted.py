"""The README's benchmark figures are quoted from ``benchmarks/RESULTS.md``, where every figure
sits beside the script and the JSON that printed it: each number in the README's Benchmarks
section must appear in RESULTS.md, at the README's precision (42.8 matches 42.84)."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"(?<![\w.^])\d[\d,]*(?:\.\d+)?")


def _numbers(text: str) -> list[str]:
    return [m.group(0).replace(",", "") for m in NUMBER.finditer(text)]


def _benchmarks_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Benchmarks")
    return readme[start : readme.index("\n## ", start + 1)]


def _quoted(q: str, pool: list[Decimal]) -> bool:
    exp = Decimal(q).as_tuple().exponent
    step = Decimal(1).scaleb(exp)  # type: ignore[arg-type]
    target = Decimal(q)
    return any(abs(v - target) <= step / 2 + Decimal("1e-12") for v in pool)


def test_readme_benchmark_figures_are_in_results() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    pool = [Decimal(v) for v in set(_numbers(results))]
    # ratios printed in RESULTS as fractions (0.0061) are quoted as percents (0.61%)
    pool += [v * 100 for v in pool if v < 1]
    missing = [q for q in _numbers(_benchmarks_section()) if not _quoted(q, pool)]
    assert not missing, f"README figures not found in benchmarks/RESULTS.md: {missing}"


def test_the_check_can_fail() -> None:
    pool = [Decimal("42.84"), Decimal("1.7934")]
    assert _quoted("42.8", pool) and _quoted("1.79", pool)
    assert not _quoted("42.9", pool) and not _quoted("1.80", pool)
