"""No model file runs code: crafted .pt2 archives (one per way torch would unpickle or evaluate
something), a pickled .pt without --trust-pickle, and random bytes, through the library and every
CLI command that loads a model. Each malicious entry, if run, creates a marker file; the tests
assert that the marker never appears and that the refusal is one line with exit status 2.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.errors import ModelLoadError
from tests.cli_run import run


class _Opener:
    """Unpickling this object calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, str]]:
        return (builtins.open, (self.marker, "w"))


def _evil(marker: Path) -> bytes:
    return pickle.dumps(_Opener(marker), protocol=2)


def _torch_save_evil(marker: Path) -> bytes:
    """The same payload inside a torch.save zip (``data.pkl``), as torch writes pickled weights."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    z_in = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for info in z_in.infolist():
            data = z_in.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = _evil(marker)
            z.writestr(info.filename, data)
    return out.getvalue()


def _save(tmp: Path, dynamic: bool = False) -> Path:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    shapes = ({0: torch.export.Dim("b")},) if dynamic else None
    ep = torch.export.export(m, (torch.zeros(2, 3),), dynamic_shapes=shapes)
    path = tmp / "good.pt2"
    torch.export.save(ep, str(path))
    return path


def _rewrite(src: Path, dst: Path, edit: Callable[[dict[str, bytes]], None]) -> Path:
    """Copy the archive ``src`` to ``dst`` with its entries (names without the root folder) edited."""
    with zipfile.ZipFile(src) as z:
        root = z.namelist()[0].split("/")[0]
        entries = {n[len(root) + 1 :]: z.read(n) for n in z.namelist()}
    edit(entries)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(f"{root}/{name}", data)
    return dst


def _edit_json(entries: dict[str, bytes], name: str, change: Callable[[dict], None]) -> None:
    obj = json.loads(entries[name])
    change(obj)
    entries[name] = json.dumps(obj).encode()


def _sample_inputs(marker: Path) -> Callable[[dict[str, bytes]], None]:
    def edit(e: dict[str, bytes]) -> None:
        e["data/sample_inputs/model.pt"] = _evil(marker)

    return edit


def _pickled_weight(marker: Path, torch_format: bool = False) -> Callable[[dict[str, bytes]], None]:
    def edit(e: dict[str, bytes]) -> None:
        def change(cfg: dict) -> None:
            first = next(iter(cfg["config"]))
            cfg["config"][first]["use_pickle"] = True
            cfg["config"][first]["path_name"] = "weight_evil"

        _edit_json(e, "data/weights/model_weights_config.json", change)
        e["data/weights/weight_evil"] = _torch_save_evil(marker) if torch_format else _evil(marker)

    return edit


def _constant(prefix: str, marker: Path) -> Callable[[dict[str, bytes]], None]:
    def edit(e: dict[str, bytes]) -> None:
        def change(cfg: dict) -> None:
            entry = {"path_name": f"{prefix}0", "is_param": False, "use_pickle": True, "tensor_meta": None}
            cfg["config"]["evil"] = entry

        _edit_json(e, "data/constants/model_constants_config.json", change)
        e[f"data/constants/{prefix}0"] = _evil(marker)

    return edit


def _legacy(kind: str, marker: Path) -> Callable[[dict[str, bytes]], None]:
    def edit(e: dict[str, bytes]) -> None:
        e[f"data/{kind}/model.pt"] = _evil(marker)

    return edit


def _sympify(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """A symbolic shape whose text, ``sympify``-ed (``eval``), opens the marker."""

    def edit(e: dict[str, bytes]) -> None:
        text = e["models/model.json"].decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        end = text.index('"', start)
        code = f"open({str(marker)!r}, 'w').close() or Symbol('s9')"
        e["models/model.json"] = (text[:start] + code.replace('"', '\\"') + text[end:]).encode()

    return edit


def _target(marker: Path) -> Callable[[dict[str, bytes]], None]:
    """A node whose target is ``torch.os.system`` with a constant command (which touches the marker)."""

    def edit(e: dict[str, bytes]) -> None:
        def change(obj: dict) -> None:
            nodes = obj["graph_module"]["graph"]["nodes"]
            nodes.insert(
                0,
                {
                    "target": "torch.os.system",
                    "inputs": [{"name": "command", "arg": {"as_string": f"touch {marker}"}, "kind": 1}],
                    "outputs": [{"as_int": 0}],
                    "metadata": {},
                    "is_hop_single_tensor_return": None,
                    "name": "evil",
                },
            )

        _edit_json(e, "models/model.json", change)

    return edit


def _aoti(marker: Path) -> Callable[[dict[str, bytes]], None]:
    def edit(e: dict[str, bytes]) -> None:
        e["data/aotinductor/model/model.so"] = b"\x7fELF not really"

    return edit


KINDS: dict[str, Callable[[Path], Callable[[dict[str, bytes]], None]]] = {
    "sample_inputs": _sample_inputs,
    "use_pickle_weight": _pickled_weight,
    "use_pickle_weight_torch_zip": lambda m: _pickled_weight(m, torch_format=True),
    "use_pickle_constant": lambda m: _constant("tensor_constant", m),
    "opaque_constant": lambda m: _constant("opaque_obj_", m),
    "custom_obj_constant": lambda m: _constant("custom_obj_", m),
    "legacy_weights": lambda m: _legacy("weights", m),
    "legacy_constants": lambda m: _legacy("constants", m),
    "sympify_expr": _sympify,
    "torch_os_system_target": _target,
    "aotinductor": _aoti,
}


def _crafted(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    marker = tmp_path / f"marker_{kind}"
    good = _save(tmp_path, dynamic=kind == "sympify_expr")
    bad = _rewrite(good, tmp_path / f"{kind}.pt2", KINDS[kind](marker))
    return bad, marker


def test_unedited_rewrite_still_loads(tmp_path: Path) -> None:
    """The rewriting itself keeps a loadable archive, so every refusal below is due to the edit."""
    good = _save(tmp_path, dynamic=True)
    same = _rewrite(good, tmp_path / "same.pt2", lambda e: None)
    assert fb.load(same).widths == [4]


def test_the_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """The malicious pickle really creates the marker when unpickled in full (so its absence means something)."""
    marker = tmp_path / "m"
    pickle.loads(_evil(marker))
    assert marker.exists()
    marker2 = tmp_path / "m2"
    torch.load(io.BytesIO(_torch_save_evil(marker2)), weights_only=False)
    assert marker2.exists()


def test_torch_itself_runs_the_sample_inputs_payload(tmp_path: Path) -> None:
    """torch.export.load on the crafted archive does run it: the guard is what stops it."""
    bad, marker = _crafted(tmp_path, "sample_inputs")
    lg = logging.getLogger("torch")
    lg.disabled = True
    try:
        torch.export.load(str(bad))
    except Exception:
        pass  # it fails after unpickling (the payload is not a tuple of inputs)
    finally:
        lg.disabled = False
    assert marker.exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_library_refuses_crafted_archive(tmp_path: Path, kind: str) -> None:
    bad, marker = _crafted(tmp_path, kind)
    with pytest.raises(ModelLoadError) as info:
        fb.load(bad)
    assert not marker.exists()
    assert "\n" not in str(info.value)


def _data_file(tmp_path: Path) -> Path:
    p = tmp_path / "x.npy"
    np.save(p, np.full((4, 3), 0.5))
    return p


def _commands(model: str, tmp_path: Path) -> list[list[str]]:
    return [
        ["inspect", model],
        ["bound", model, "--failures", "1"],
        ["tolerate", model, "--eps", "0.5", "--eps-prime", "0.05"],
        ["inject", model, "--failures", "1", "--samples", "4", "--trials", "2"],
        ["worst", model, "--failures", "1"],
        ["certify", model, "--data", str(_data_file(tmp_path)), "--failures", "1"],
        ["precision", model, "--budget", "0.5"],
        ["boost", model],
        ["report", model, "--out", str(tmp_path / "r.html")],
    ]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_command_refuses_crafted_archive(tmp_path: Path, kind: str) -> None:
    bad, marker = _crafted(tmp_path, kind)
    for args in _commands(str(bad), tmp_path):
        code, out, err = run(*args)
        assert not marker.exists(), args
        assert code == 2, (args, code, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
        assert "Traceback" not in err + out


def test_corrupt_pt2_prints_one_line(tmp_path: Path) -> None:
    """A truncated archive: one line, nothing from torch's logging, and the logger state comes back."""
    good = _save(tmp_path)
    data = good.read_bytes()
    cut = tmp_path / "cut.pt2"
    cut.write_bytes(data[: len(data) // 2])
    lg = logging.getLogger("torch")
    before = (list(lg.handlers), lg.propagate, lg.level, lg.disabled)
    for broken in (cut, _rewrite(good, tmp_path / "nomodel.pt2", lambda e: e.pop("models/model.json"))):
        code, out, err = run("inspect", str(broken))
        assert code == 2
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert (list(lg.handlers), lg.propagate, lg.level, lg.disabled) == before


def test_archive_that_torch_loads_with_a_logged_traceback(tmp_path: Path) -> None:
    """A weights config that names a missing payload: torch would log; we print one line."""
    good = _save(tmp_path)

    def edit(e: dict[str, bytes]) -> None:
        del e["data/weights/weight_0"]

    bad = _rewrite(good, tmp_path / "missing.pt2", edit)
    code, out, err = run("inspect", str(bad))
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err


def test_pickled_pt_needs_trust_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker_pt"
    p = tmp_path / "evil.pt"
    p.write_bytes(_torch_save_evil(marker))
    for args in _commands(str(p), tmp_path):
        code, out, err = run(*args)
        assert code == 2 and not marker.exists(), args
        assert len(err.strip().splitlines()) == 1 and "--trust-pickle" in err, (args, err)
        assert "--trust-pickle" in run(args[0], "--help").stdout, args  # the advised option exists
    with pytest.raises(ModelLoadError):
        fb.load(p)
    assert not marker.exists()


def test_random_bytes_named_pt_are_not_called_pickles(tmp_path: Path) -> None:
    p = tmp_path / "noise.pt"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, out, err = run("inspect", str(p))
    assert code == 2
    assert "not a readable torch file" in err
    assert "--trust-pickle" not in err and "pickled Python objects" not in err


def test_onnx_with_a_python_op_runs_nothing(tmp_path: Path) -> None:
    """ONNX files are protobuf: an unknown custom op is refused by name, nothing is executed."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("PyOp", ["x"], ["y"], domain="ai.onnx.contrib", command=f"touch {tmp_path / 'mk'}")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.contrib", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    p = tmp_path / "py.onnx"
    onnx.save(model, str(p))
    code, out, err = run("inspect", str(p))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mk").exists()


#: Kinds whose payload torch 2.13 itself runs when the archive is handed to torch.export.load.
TORCH_RUNS = [
    "legacy_constants",
    "legacy_weights",
    "opaque_constant",
    "sample_inputs",
    "sympify_expr",
    "use_pickle_constant",
    "use_pickle_weight",
    "use_pickle_weight_torch_zip",
]


@pytest.mark.parametrize("kind", TORCH_RUNS)
def test_unguarded_torch_runs_each_payload(tmp_path: Path, kind: str) -> None:
    """Without the guard these archives do run code: each refusal above prevents a real execution."""
    bad, marker = _crafted(tmp_path, kind)
    lg = logging.getLogger("torch")
    handlers, propagate = list(lg.handlers), lg.propagate
    lg.handlers, lg.propagate = [logging.NullHandler()], False
    try:
        torch.export.load(str(bad))
    except Exception:
        pass  # most fail after running the payload
    finally:
        lg.handlers, lg.propagate = handlers, propagate
    assert marker.exists()


def test_constant_nodes_only_call_aten(tmp_path: Path) -> None:
    """A graph node calling os.system on a constant is refused by name and never called."""
    import os

    from faultbound.errors import UnsupportedModelError
    from faultbound.network.readers.graph_export import graph_from_exported

    marker = tmp_path / "marker_node"
    m = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    ep = torch.export.export(m, (torch.zeros(1, 3),))
    g = ep.graph_module.graph
    first = next(n for n in g.nodes if n.op == "call_function")
    with g.inserting_before(first):
        g.call_function(os.system, (f"touch {marker}",))
    with pytest.raises(UnsupportedModelError, match="system"):
        graph_from_exported(ep)
    assert not marker.exists()


def test_control_characters_in_program_strings_refused(tmp_path: Path) -> None:
    """Strings of the program JSON reach generated Python source (stack traces in comments); a
    carriage return there would end the comment, so such a program is refused."""
    good = _save(tmp_path)

    def edit(e: dict[str, bytes]) -> None:
        def change(obj: dict) -> None:
            node = obj["graph_module"]["graph"]["nodes"][0]
            node["metadata"]["stack_trace"] = "File x, line 1, in f\n    y = 1\rimport os"

        _edit_json(e, "models/model.json", change)

    bad = _rewrite(good, tmp_path / "cr.pt2", edit)
    with pytest.raises(ModelLoadError, match="control characters"):
        fb.load(bad)


def test_guard_leaves_logging_state_alone(tmp_path: Path) -> None:
    """No global state outlives a load: the torch logger's handlers and flags are as before."""
    good = _save(tmp_path)
    lg = logging.getLogger("torch")
    before = (list(lg.handlers), lg.propagate, lg.level, lg.disabled)
    fb.load(good)
    with pytest.raises(ModelLoadError):
        fb.load(_crafted(tmp_path, "sample_inputs")[0])
    assert (list(lg.handlers), lg.propagate, lg.level, lg.disabled) == before
