"""The CLI on graph networks: ``inspect`` (sites in topological order, ``--nodes``, ``--json``),
``--sites``, the named forms of ``--failures`` and the one-line errors; then every command
(``bound``, ``tolerate``, ``inject``, ``worst``, ``certify`` and ``report``) on a residual network
and a LeNet with max pooling.

The expected sites, widths and fan-ins are worked out by hand from the architecture of
:func:`faultbound.models.small_resnet` (a 1x8x8 input; a 3x3 stem of 8 channels; a basic block of 8
channels; a basic block of 16 channels with stride 2 and a 1x1 shortcut; average pooling; a linear
classifier). The references of the commands are plain torch: the module itself with a forward hook
that zeroes one unit of the crashed ReLU's output (the statement of a crash), never faultbound's own
engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import faultbound as fb
from faultbound.cli._sites import parse_failures
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Crash, SynapseCrash
from faultbound.models import lenet_maxpool, small_resnet
from tests.cli_run import run

#: (node, N, fan-in) of each fault site of small_resnet, in topological order. A 3x3 conv on c
#: channels has fan-in 9c; a ReLU after a residual sum adds one input per other summand.
SITES = [
    ("relu", 8 * 8 * 8, 9 * 1),
    ("layers.0.0.relu1", 8 * 8 * 8, 9 * 8),
    ("layers.0.0.relu2", 8 * 8 * 8, 9 * 8 + 1),
    ("layers.1.0.relu1", 16 * 4 * 4, 9 * 8),
    ("layers.1.0.relu2", 16 * 4 * 4, 9 * 16 + 8),
]


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("graph") / "small_resnet.pt2"
    torch.export.save(torch.export.export(small_resnet(), (torch.rand(1, 1, 8, 8),)), str(p))
    return p


def _one_line_error(r: object, needle: str) -> None:
    code, out, err = r  # type: ignore[misc]
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    assert needle.lower() in lines[0].lower(), lines[0]


def test_inspect_lists_sites_in_topological_order(resnet_file: Path) -> None:
    code, out, err = run("inspect", str(resnet_file))
    assert code == 0, err
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == len(SITES)
    for k, (row, (name, width, fan_in)) in enumerate(zip(rows, SITES, strict=True), start=1):
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[:4] == [str(k), name, str(width), str(fan_in)], cells
        assert cells[4] == "ReLU" and cells[5] == "1"
    assert "S = 5 fault sites" in out


def test_inspect_json_has_sites_and_nodes(resnet_file: Path) -> None:
    code, out, err = run("inspect", str(resnet_file), "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["graph"] is True and d["input_shape"] == [1, 8, 8] and d["n_outputs"] == 10
    assert [(s["node"], s["width"], s["fan_in"]) for s in d["sites"]] == SITES
    assert d["widths"] == [w for _, w, _ in SITES]
    # every batch norm is folded into its convolution: the graph keeps one bias per channel instead
    # of a scale and a shift, so the count is the module's minus one vector per norm (6 norms)
    module_params = sum(p.numel() for p in small_resnet().parameters())
    assert d["n_params"] == module_params - (8 + 8 + 8 + 16 + 16 + 16)
    names = [n["node"] for n in d["nodes"]]
    assert names[0] == "x" and names[-1] == "fc"
    for s in d["sites"]:
        assert s["node"] in names and s["Y"] > 0 and s["range"][0] == 0


def test_inspect_nodes_lists_every_node_with_its_inputs(resnet_file: Path) -> None:
    d = json.loads(run("inspect", str(resnet_file), "--json").stdout)
    code, out, err = run("inspect", str(resnet_file), "--nodes")
    assert code == 0, err
    table = out.split("nodes in topological order", 1)[1]
    for n in d["nodes"]:
        assert n["node"] in table
    # the two residual sums read two nodes each
    adds = [n for n in d["nodes"] if n["op"] == "add"]
    assert len(adds) == 2 and all(len(n["inputs"]) == 2 for n in adds)
    assert "relu" in adds[0]["inputs"]  # the first block's identity shortcut


def test_sites_option_adds_named_nodes_in_order(resnet_file: Path) -> None:
    code, out, err = run("inspect", str(resnet_file), "--sites", "layers.0.0,layers.1.0", "--json")
    assert code == 0, err
    names = [s["node"] for s in json.loads(out)["sites"]]
    assert names == ["relu", "layers.0.0.relu1", "layers.0.0", "layers.0.0.relu2",
                     "layers.1.0.relu1", "layers.1.0", "layers.1.0.relu2"]
    code, out, err = run("inspect", str(resnet_file), "--sites", "layers.0.0")
    assert code == 0 and "(named)" in out


def test_sites_option_on_a_chain_reads_it_as_a_graph(tmp_path: Path) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    p = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 3),)), str(p))
    d = json.loads(run("inspect", str(p), "--json").stdout)
    assert "layers" in d and "sites" not in d  # a chain stays the layered Network
    nodes = json.loads(run("inspect", str(p), "--json", "--sites", "layer1.op0").stdout)
    assert [s["width"] for s in nodes["sites"]] == [4, 4]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sites", "nope"], "'nope' is none"),
        (["--sites", ","], "--sites"),
        (["--sites", "x"], "inputs never fail"),
    ],
)
def test_bad_sites_are_one_line(resnet_file: Path, args: list[str], needle: str) -> None:
    _one_line_error(run("inspect", str(resnet_file), *args), needle)


def test_nodes_on_a_chain_is_one_line(tmp_path: Path) -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    p = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 3),)), str(p))
    _one_line_error(run("inspect", str(p), "--nodes"), "only for a graph")


class _Unsupported(nn.Module):
    """A residual block followed by a cumulative sum, which no reader supports."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc(x)) + x
        return self.out(torch.cumsum(h, dim=-1))


@pytest.fixture(scope="module")
def unsupported_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("unsupported") / "cumsum.pt2"
    torch.export.save(torch.export.export(_Unsupported(), (torch.rand(1, 4),)), str(p))
    return p


@pytest.mark.parametrize("command", ["inspect", "bound", "inject", "worst", "certify", "tolerate", "report"])
def test_unsupported_operator_is_one_line_exit_2(unsupported_file: Path, tmp_path: Path, command: str) -> None:
    p = unsupported_file
    extra = {
        "inspect": [],
        "bound": ["--failures", "1"],
        "inject": ["--samples", "4", "--failures", "1"],
        "worst": ["--failures", "1"],
        "certify": ["--digits", "--failures", "1"],
        "tolerate": ["--eps", "1", "--eps-prime", "0.1"],
        "report": ["--out", str(tmp_path / "r.html")],
    }[command]
    _one_line_error(run(command, str(p), *extra), "cumsum")


def test_pickled_module_needs_input_shape(tmp_path: Path) -> None:
    p = tmp_path / "resnet.pt"
    torch.save(small_resnet(), str(p))
    _one_line_error(run("inspect", str(p), "--trust-pickle"), "input_shape")
    code, out, err = run("inspect", str(p), "--trust-pickle", "--input-shape", "1,8,8", "--json")
    assert code == 0, err
    assert [s["node"] for s in json.loads(out)["sites"]] == [n for n, _, _ in SITES]


def test_help_texts_document_sites_failures_and_input_shape() -> None:
    for command in ("inspect", "bound", "tolerate", "inject", "worst", "certify", "report"):
        code, out, _ = run(command, "--help")
        flat = " ".join(out.split())
        assert code == 0
        assert "--sites" in flat and "--input-shape" in flat, command
        assert ".pt/.pth" in flat, command  # --input-shape: needed for pickled modules
    for command in ("bound", "inject", "worst", "certify"):
        flat = " ".join(run(command, "--help").stdout.split())
        assert "all=K" in flat and "NAME=K" in flat, command


# ---------------------------------------------------------------------------- --failures forms
@pytest.fixture(scope="module")
def resnet_graph(resnet_file: Path) -> object:
    from faultbound import load

    return load(resnet_file)


def test_failures_plain_counts_are_unchanged(resnet_graph: object) -> None:
    assert parse_failures("1,0,2,0,0", resnet_graph, Crash()) == [1, 0, 2, 0, 0]


def test_failures_all_and_named(resnet_graph: object) -> None:
    assert parse_failures("all=1", resnet_graph, Crash()) == [1, 1, 1, 1, 1]
    assert parse_failures("layers.1.0.relu1=2", resnet_graph, Crash()) == [0, 0, 0, 2, 0]
    assert parse_failures("all=1,relu=0,5=3", resnet_graph, Crash()) == [0, 1, 1, 1, 3]
    # synapse faults address the weighted nodes: 5 convolutions, 1 shortcut, 1 dense layer
    assert parse_failures("all=1", resnet_graph, SynapseCrash()) == [1] * 7
    assert parse_failures("fc=2", resnet_graph, SynapseCrash()) == [0] * 6 + [2]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("relu=1,2", "not both"),
        ("nope=1", "'nope' is none"),
        ("relu=x", "integer count"),
        ("relu=-1", "non-negative"),
        ("9=1", "1..5"),
    ],
)
def test_failures_bad_forms(resnet_graph: object, text: str, needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=None) as e:
        parse_failures(text, resnet_graph, Crash())
    assert needle in str(e.value)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "layers.1.0.relu1=1,layers.1.0.relu1=2",
            "Expected each fault site once in --failures, but `layers.1.0.relu1` is given twice.",
        ),
        ("relu=1,relu=1", "`relu` is given twice"),  # even with the same count
        ("relu=1,1=2", "`relu` is given twice (as `relu` and `1`)"),  # site 1 is relu
        ("5=0,layers.1.0.relu2=3", "`layers.1.0.relu2` is given twice (as `5` and `layers.1.0.relu2`)"),
        ("all=1,relu=0,relu=2", "`relu` is given twice"),
        ("all=1,all=2", "`all` is given twice"),
        ("relu=0,all=1", "it follows `relu`"),  # all=K after a name would silently override it
    ],
)
def test_failures_repeated_site_is_refused(resnet_graph: object, text: str, needle: str) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        parse_failures(text, resnet_graph, Crash())
    assert needle in str(e.value)


def test_failures_repeated_site_is_one_line_on_the_cli(resnet_file: Path, resnet_graph: object) -> None:
    for text in ("layers.0.0.relu2=1,layers.0.0.relu2=2", "all=1,all=0", "fc=1,7=0"):
        fault = ["--fault", "synapse-crash"] if "fc" in text else []
        r = run("bound", str(resnet_file), "--failures", text, *fault)
        _one_line_error(r, "given twice")
    _one_line_error(run("bound", str(resnet_file), "--failures", "relu=1,relu=1"), "`relu` is given twice")
    # a site named once, after all=K, is the documented override and still accepted
    assert parse_failures("all=1,layers.0.0.relu2=0", resnet_graph, Crash()) == [1, 1, 0, 1, 1]


def test_failures_named_forms_on_a_layered_network() -> None:
    import faultbound as fb

    net = fb.Network.from_torch(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)))
    assert parse_failures("all=1", net, Crash()) == [1, 1]
    assert parse_failures("2=1", net, Crash()) == [0, 1]
    assert parse_failures("all=1", net, SynapseCrash()) == [1, 1, 1]
    with pytest.raises(InvalidArgumentError, match="numbered 1..2"):
        parse_failures("relu=1", net, Crash())
    with pytest.raises(InvalidArgumentError, match=r"but `2` is given twice\.$"):
        parse_failures("2=1,2=0", net, Crash())


def test_bound_cli_reads_named_failures_like_counts(tmp_path: Path) -> None:
    """On a chain (served on main) the named form gives exactly the plain form's answer."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 1))
    p = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(m, (torch.rand(1, 3),)), str(p))
    a = json.loads(run("bound", str(p), "--failures", "0,1", "--json").stdout)
    b = json.loads(run("bound", str(p), "--failures", "2=1", "--json").stdout)
    c = json.loads(run("bound", str(p), "--failures", "all=1", "--json").stdout)
    assert a["value"] == b["value"] and a["failures"] == b["failures"] == [0, 1]
    assert c["failures"] == [1, 1] and c["value"] > a["value"]


# ----------------------------------------------------------------------------- every command
SITE = "layers.1.0.relu2"  # the last ReLU of small_resnet: 16 x 4 x 4 = 256 units, site 5 of 5


def _module(m: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)  # type: ignore[index]
    return m


def _crashed(model: nn.Module, relu: nn.Module, x: torch.Tensor, unit: int) -> torch.Tensor:
    """The model's output with unit ``unit`` (flat index) of ``relu``'s output sent as 0."""

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out.reshape(out.shape[0], -1)[:, unit] = 0.0
        return out

    h = relu.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        h.remove()


def _brute_single_crash(model: nn.Module, site: str, x: torch.Tensor) -> float:
    """max over units of the site and over the inputs x of ||F(x) - F_crash(x)||_inf."""
    relu = _module(model, site)
    widths: list[int] = []
    h = relu.register_forward_hook(lambda _m, _i, o: widths.append(o[0].numel()))
    with torch.no_grad():
        clean = model(x)
    h.remove()
    return max(float((_crashed(model, relu, x, j) - clean).abs().max()) for j in range(widths[0]))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    m = small_resnet(seed=1).double()
    p = tmp_path_factory.mktemp("graph") / "resnet.pt2"
    torch.export.save(torch.export.export(small_resnet(seed=1), (torch.rand(1, 1, 8, 8),)), str(p))
    return m, p


def _json(*args: str) -> dict[str, Any]:
    r = run(*args, "--json")
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def test_bound_tight_is_above_every_single_crash(resnet: tuple[nn.Module, Path]) -> None:
    model, path = resnet
    d = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")
    assert d["method"] == "tight" and d["failures"] == [0, 0, 0, 0, 1]
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.cat([x, torch.zeros(1, 1, 8, 8, dtype=torch.float64), torch.ones(1, 1, 8, 8, dtype=torch.float64)])
    assert _brute_single_crash(model, SITE, x) <= d["value"]
    # the per-site contributions: only the crashed site contributes
    assert d["per_layer"][:4] == [0, 0, 0, 0] and d["per_layer"][4] > 0


def test_bound_both_on_a_graph_gives_tight_and_says_why_no_paper(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    d = _json("bound", str(path), "--failures", f"{SITE}=1", "--method", "both")
    assert [r["method"] for r in d["results"]] == ["tight"]
    assert any("paper" in n for n in d["notes"])
    # without --method: fb.bound's default on a graph, tight (no note: paper was not asked for)
    d = _json("bound", str(path), "--failures", f"{SITE}=1")
    want = fb.bound(fb.load(path), [0, 0, 0, 0, 1])
    assert want.method == "tight" and [r["method"] for r in d["results"]] == ["tight"]
    assert d["value"] == want.value and not any("paper" in n for n in d["notes"])
    code, out, err = run("bound", str(path), "--failures", "all=1")
    assert code == 0, err
    for name in ("relu", "layers.0.0.relu1", "layers.0.0.relu2", "layers.1.0.relu1", SITE):
        assert name in out
    # --method paper alone on a graph is refused in one line
    code, _, err = run("bound", str(path), "--failures", "all=1", "--method", "paper")
    assert code == 2 and len(err.strip().splitlines()) == 1


def test_worst_replays_and_stays_below_the_bound(resnet: tuple[nn.Module, Path]) -> None:
    model, path = resnet
    cert = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")["value"]
    w = _json("worst", str(path), "--failures", f"{SITE}=1")
    assert 0 < w["max_error"] <= cert
    (units,) = w["failure_set"].values()
    x = torch.tensor(w["input"], dtype=torch.float64).reshape(1, 1, 8, 8)
    relu = _module(model, SITE)
    with torch.no_grad():
        again = float((_crashed(model, relu, x, units[0]) - model(x)).abs().max())
    assert again == pytest.approx(w["max_error"], rel=1e-4, abs=1e-6)


def test_inject_stays_below_the_bound(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    cert = _json("bound", str(path), "--method", "tight", "--failures", "all=1")["value"]
    d = _json("inject", str(path), "--samples", "16", "--failures", "all=1", "--trials", "40")
    assert d["configurations"] == 40 and 0 < d["max_error"] <= cert


def test_certify_certified_below_measured(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    d = _json("certify", str(path), "--digits", "--failures", f"{SITE}=1", "--max-inputs", "60")
    m = d["measured"]
    assert m["worst_exhaustive"] is True and m["worst_sets"] == 256
    assert d["certified_accuracy"] <= m["worst_accuracy"] <= d["clean_accuracy"]


def test_tolerate_agrees_with_bound(resnet: tuple[nn.Module, Path]) -> None:
    _, path = resnet
    one = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")["value"]
    eps = 3 * one
    t = _json("tolerate", str(path), "--eps", f"{eps!r}", "--eps-prime", "0", "--method", "tight")
    per = t["per_layer_max"]
    assert len(per) == 5 and per[4] >= 1
    f = per[4]
    inside = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}={f}")["value"]
    outside = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}={f + 1}")["value"]
    assert inside <= eps < outside


def test_report_on_a_graph(resnet: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = resnet
    out = tmp_path / "r.html"
    cert = _json("bound", str(path), "--method", "tight", "--failures", f"{SITE}=1")["value"]
    d = _json("report", str(path), "--failures", f"{SITE}=1", "--out", str(out), "--no-plots")
    row = d["rows"][0]
    assert row["tight"]["value"] == pytest.approx(cert) and row["paper"]["value"] is None
    assert row["measured"]["max_error"] <= cert and d["violations"] == 0
    html = out.read_text()
    assert SITE in html and "is defined for layered networks" in html


def test_lenet_with_max_pooling(tmp_path: Path) -> None:
    model = lenet_maxpool(seed=2)
    p = tmp_path / "lenet.pt2"
    torch.export.save(torch.export.export(model, (torch.rand(1, 1, 8, 8),)), str(p))
    info = _json("inspect", str(p))
    assert [s["width"] for s in info["sites"]] == [6 * 8 * 8, 16 * 4 * 4, 32]
    d = _json("bound", str(p), "--method", "tight", "--failures", "1=1")
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert _brute_single_crash(model.double(), "1", x) <= d["value"]
