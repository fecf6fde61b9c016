"""The import graph of ``src/faultbound`` and its cycles, read from the source with :mod:`ast`.

Every ``import`` / ``from ... import`` of a ``faultbound`` module is an edge, wherever it stands
(a lazy import inside a function counts the same as one at the top), except imports under
``if TYPE_CHECKING:``, which never run. ``from faultbound.pkg import name`` is an edge to the
submodule ``faultbound.pkg.name`` when that is a module, and to ``faultbound.pkg`` otherwise. The
implicit import of a parent package when a submodule is imported is not an edge.

Run ``python tests/import_cycles.py [src/faultbound]``: prints one line per elementary cycle
(``a -> b -> a``) and the count; exits 1 when there is a cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "faultbound"


def module_names(root: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``root`` (a package ``faultbound``)."""
    out: dict[str, Path] = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            t = node.test
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    for n in ast.walk(sub):
                        if hasattr(n, "lineno"):
                            lines.add(n.lineno)
    return lines


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``faultbound`` modules that module ``name`` (file ``path``) imports when it runs."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    out.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in modules:
                    out.add(sub)
                elif base in modules:
                    out.add(base)
    out.discard(name)
    return out


def graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules it imports (within the package)."""
    modules = module_names(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle, each once, starting at its smallest module name."""
    found: list[list[str]] = []
    for start in sorted(g):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(g.get(node, ())):
                if nxt == start:
                    found.append([*path, start])
                elif nxt > start and nxt not in path:
                    stack.append((nxt, [*path, nxt]))
    return sorted(found)


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else SRC
    found = cycles(graph(root))
    for c in found:
        print(" -> ".join(c))
    print(f"{len(found)} import cycle(s) in {root.name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
