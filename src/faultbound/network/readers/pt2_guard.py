"""Checking a ``.pt2`` archive before torch reads it, so that no code from the file ever runs.

``torch.export.load`` is not safe on an untrusted file (torch 2.13, ``torch/export/pt2_archive/
_package.py`` and ``torch/_export/serde/serialize.py``). It unpickles, or runs, these parts of an
archive:

* ``data/sample_inputs/<model>.pt`` and the legacy ``data/weights/<model>.pt`` /
  ``data/constants/<model>.pt``: ``deserialize_torch_artifact`` tries ``torch.load(weights_only=
  True)`` and, when that fails, *falls back to* ``weights_only=False``;
* weights and tensor constants whose payload config says ``use_pickle``: ``torch.load(...,
  weights_only=False)`` directly;
* constants named ``custom_obj_*`` (``torch._C._pickle_load_obj``) and ``opaque_obj_*``
  (``pickle.loads``);
* ``data/aotinductor/...``: compiled shared libraries, loaded (and so run) by
  ``AOTIModelPackageLoader``;
* every symbolic-shape ``expr_str`` of ``models/<model>.json``: ``sympy.sympify``, which ``eval``\\ s
  the string;
* an archive that fails to load is retried in the pre-2.8 layout, whose ``serialized_*.pt``
  entries go through the same fallback.

:func:`read_checked_archive` reads the file once into memory with torch's own zip reader (the
same reader that ``torch.export.load`` uses, so both see the same entries) and refuses it, in one
line, unless every entry is of a known kind, every pickled entry loads with the weights-only
unpickler, no entry holds an object or compiled code, and every ``expr_str`` is arithmetic over
symbol names. A weights-only pickle is one that ``torch.load(weights_only=True)`` accepts: it only
names tensors, storages and plain containers, so torch's later ``weights_only=False`` read of the
same bytes builds the same values and runs nothing. The caller then hands torch the checked bytes
(not the path, which could change in between).

:func:`quiet_torch_logging` keeps torch's own warnings and logged tracebacks off stderr while it
reads the archive, and restores the logger afterwards.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from faultbound.errors import ModelLoadError

__all__ = ["read_checked_archive", "quiet_torch_logging"]

_ADVICE = "refusing it, because loading it would run code from the file"

#: Entries outside data/ and models/ that torch.export.save writes (no code, never unpickled).
_PLAIN = {"archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id"}

#: Names allowed in a symbolic-shape expression: symbols (s0, u3, ...), and the sympy functions
#: torch's deserializer passes as locals, plus sympy's own relational and min/max names.
_SYM_FUNCS = {
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "IntTrueDiv", "FloatTrueDiv", "ToFloat", "TruncToInt",
    "TruncToFloat", "FloatPow", "Max", "Min", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    "Abs", "True", "False", "oo", "floor", "ceiling", "Piecewise",
    # srepr form: Symbol('s31', positive=True, integer=True), Integer(3), Add(...), ...
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "positive", "negative", "nonnegative",
    "nonpositive", "integer", "real", "finite", "zero", "nonzero", "even", "odd", "rational", "commutative",
}  # fmt: skip
_QUOTED_SYMBOL = re.compile(r"'[a-z]+[0-9]+'")
_SYM_CHARS = re.compile(r"^[A-Za-z0-9 +\-*/%(),.<>=!&|~^]*$")
_SYM_NAME = re.compile(r"(?<![0-9A-Za-z.])[A-Za-z][A-Za-z0-9]*")  # not the e of 1e5
_SYMBOL = re.compile(r"^[a-z]+[0-9]+$")
_DOT_OUTSIDE_NUMBER = re.compile(r"(?<![0-9])\.|\.(?![0-9])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\x85]")


def _refuse(path: Path, why: str) -> ModelLoadError:
    return ModelLoadError(f"{str(path)!r} is not a plain torch.export program: {why}; {_ADVICE}.")


def _check_weights_only(data: bytes, what: str, path: Path) -> None:
    """Refuse ``data`` unless the weights-only unpickler accepts it (empty means "nothing")."""
    if len(data) == 0:
        return
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # any failure: torch's fallback would unpickle it in full
        msg = " ".join(str(e).split())[:160] or type(e).__name__
        why = f"{what} is a pickle that the weights-only reader rejects ({type(e).__name__}: {msg})"
        raise _refuse(path, why) from None


def _check_expr(expr: Any, path: Path) -> None:
    """An ``expr_str`` is ``sympify``-ed (``eval``): allow only arithmetic over symbols and numbers."""
    if not isinstance(expr, str) or len(expr) > 2000:
        raise _refuse(path, "a symbolic shape is not a short string")
    expr = _QUOTED_SYMBOL.sub("s0", expr)  # a quoted symbol name is a plain string; nothing else may be quoted
    if not _SYM_CHARS.match(expr):
        raise _refuse(path, f"a symbolic shape is not an arithmetic expression ({expr[:60]!r})")
    if _DOT_OUTSIDE_NUMBER.search(expr):
        raise _refuse(path, f"a symbolic shape uses attribute access ({expr[:60]!r})")
    for name in _SYM_NAME.findall(expr):
        if name not in _SYM_FUNCS and not _SYMBOL.match(name):
            raise _refuse(path, f"a symbolic shape names {name!r}, which is not a symbol or shape function")


def _walk_json(obj: Any, path: Path) -> None:
    """Check every string of a model JSON (no control characters) and every ``expr_str``."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, dict):
            for k, v in o.items():
                if k == "expr_str":
                    _check_expr(v, path)
                stack.append(k)
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)
        elif isinstance(o, str) and _CONTROL.search(o):
            raise _refuse(path, "its program holds a string with control characters")


def _payload_config(reader: Any, name: str, path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(reader.get_record(name).decode("utf-8"))
    except Exception as e:
        raise _refuse(path, f"{name} is not JSON ({type(e).__name__})") from None
    entries = cfg.get("config") if isinstance(cfg, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(v, dict) for v in entries.values()):
        raise _refuse(path, f"{name} is not a payload config")
    return entries


def check_archive(data: bytes, path: Path) -> None:
    """Refuse (raise :class:`ModelLoadError`) unless loading ``data`` with torch runs no code from it."""
    try:
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        names = list(reader.get_all_records())
    except Exception as e:
        raise ModelLoadError(
            f"Cannot read {str(path)!r} as a torch.export program: it is not a readable archive "
            f"({type(e).__name__}: {' '.join(str(e).split())[:120]})."
        ) from None

    def record(name: str) -> bytes:
        try:
            return bytes(reader.get_record(name))
        except Exception as e:
            raise _refuse(path, f"entry {name!r} cannot be read ({type(e).__name__})") from None

    if "archive_format" not in names or record("archive_format") != b"pt2":
        raise ModelLoadError(
            f"Cannot read {str(path)!r} as a torch.export program: it has no 'archive_format' entry "
            "saying pt2 (files written by torch < 2.8 are not read: save the program again with "
            "torch.export.save)."
        )
    models = sorted(n[len("models/") : -len(".json")] for n in names if re.fullmatch(r"models/[^/]+\.json", n))
    if not models:
        raise ModelLoadError(f"Cannot read {str(path)!r} as a torch.export program: it holds no models/*.json.")
    for n in names:
        known = (
            n in _PLAIN
            or re.fullmatch(r"models/[^/]+\.json", n)
            or re.fullmatch(r"data/(sample_inputs|weights|constants)/[^/]+", n)
            or n.startswith("extra/")  # read as text only
        )
        if not known:
            raise _refuse(path, f"it holds {n!r}, which is not part of an exported program (compiled code or data)")
    for m in models:
        try:
            program = json.loads(record(f"models/{m}.json").decode("utf-8"))
        except ModelLoadError:
            raise
        except Exception as e:
            raise _refuse(path, f"models/{m}.json is not JSON ({type(e).__name__})") from None
        _walk_json(program, path)
        sample = f"data/sample_inputs/{m}.pt"
        if sample in names:
            _check_weights_only(record(sample), f"its sample inputs ({sample})", path)
        for kind in ("weights", "constants"):
            legacy = f"data/{kind}/{m}.pt"
            if legacy in names:
                _check_weights_only(record(legacy), f"its {kind} ({legacy})", path)
                continue
            cfg_name = f"data/{kind}/{m}_{kind}_config.json"
            if cfg_name not in names:
                continue
            for fqn, meta in _payload_config(reader, cfg_name, path).items():
                file = meta.get("path_name")
                if not isinstance(file, str) or "/" in file:
                    raise _refuse(path, f"{cfg_name} gives {fqn!r} no plain file name")
                if kind == "constants" and not file.startswith("tensor_"):
                    raise _refuse(path, f"constant {fqn!r} is a Python or script object ({file}), not a tensor")
                if meta.get("use_pickle"):
                    entry = f"data/{kind}/{file}"
                    if entry not in names:
                        raise _refuse(path, f"{cfg_name} names {entry!r}, which is missing")
                    _check_weights_only(record(entry), f"{kind[:-1]} {fqn!r} ({entry})", path)


def read_checked_archive(path: Path) -> bytes:
    """The bytes of ``path``, once :func:`check_archive` has found that loading them runs no code."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ModelLoadError(f"Cannot read {str(path)!r}: {e.strerror or type(e).__name__}.") from None
    check_archive(data, Path(path))
    return data


@contextmanager
def quiet_torch_logging() -> Iterator[None]:
    """Keep torch's log records and warnings off stderr inside the block; restore them after.

    The ``torch`` logger gets only a ``NullHandler`` and stops propagating (so Python's last-resort
    handler does not print child records either); its handlers and ``propagate`` flag come back
    when the block ends, whatever happens inside.
    """
    lg = logging.getLogger("torch")
    handlers, propagate = list(lg.handlers), lg.propagate
    lg.handlers = [logging.NullHandler()]
    lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        lg.handlers = handlers
        lg.propagate = propagate
