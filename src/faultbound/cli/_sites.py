"""Fault sites on the command line: ``--sites`` (extra graph nodes that can fail) and the forms of
``--failures`` that address sites by name.

On a graph network (residual blocks, pooling, attention) the fault sites are every activation node
plus the nodes named with ``--sites NAME,...``, in topological order; ``faultbound inspect MODEL``
lists them (``--nodes`` lists every node). ``--failures`` gives one count per site, in that order,
or one of two short forms:

* ``all=K``: K failing units at every site (for synapse faults: into every weighted node / layer);
* ``NAME=K,NAME=K,...``: K at each named site, 0 elsewhere; a name is a site's node name (as
  ``inspect`` prints it) or its 1-based number. ``all=K`` may come first as the default, e.g.
  ``all=1,fc=0``.

Each site is given at most once (by its name or by its number, not both) and ``all=K`` at most
once and first: a repeated site is refused rather than read as "the last value wins".

On a layered network the sites are its hidden layers 1..L (L+1 synapse layers), numbered.
"""

from __future__ import annotations

from typing import Any

import typer

from faultbound.cli._common import parse_ints, parse_sites
from faultbound.errors import InvalidArgumentError
from faultbound.faults import Fault
from faultbound.network.graph import GraphNetwork

__all__ = ["FAILURES_HELP", "SITES", "parse_failures", "parse_sites", "site_names"]

SITES = typer.Option(
    None,
    "--sites",
    help="Extra fault sites NAME,...: graph nodes (names as `inspect --nodes` prints them) that can fail besides "
    "the activations; the model is then read as a graph and --failures addresses the sites in topological order.",
)

FAILURES_HELP = (
    "Failing units per fault site f_1,...,f_S in the order `inspect` lists the sites (hidden layers; L+1 synapse "
    "layers, or one per weighted node of a graph, for synapse faults); or all=K for K at every site; or "
    "NAME=K,... for K at the named sites (node name or 1-based site number) and 0 elsewhere, e.g. all=1,fc=0."
)


def site_names(net: Any, fault: Fault) -> list[str]:
    """The name of each position of a failure distribution for ``fault``: the node names of a
    graph's fault sites (or of its weighted nodes, for synapse and weight faults); ``""`` for the
    layers of a layered network (addressed by number only)."""
    from faultbound.failures import layer_count

    if isinstance(net, GraphNetwork):
        if fault.site in ("synapse", "weight"):
            return [net.nodes[i].name for i in net.weighted_nodes]
        return [s.name for s in net.sites]
    return [""] * layer_count(net, fault)


def parse_failures(text: str, net: Any, fault: Fault, what: str = "failures") -> list[int]:
    """Parse ``--failures``: ``1,0,2`` (one count per site), ``all=K``, or ``NAME=K,...`` (see the
    module docstring). The counts are validated later, by :func:`faultbound.failures.failure_counts`.

    Raises:
        InvalidArgumentError: a malformed entry, a name that is no site, a negative count, plain
            counts mixed with named ones, a site given twice (by name or number), or ``all=K``
            given twice or after a named site.
    """
    entries = [e.strip() for e in text.split(",") if e.strip() != ""]
    if not any("=" in e for e in entries):
        return parse_ints(text, what)
    names = site_names(net, fault)
    counts = [0] * len(names)
    index = {n: i for i, n in enumerate(names) if n}
    given: dict[int, str] = {}  # site position -> the key (name or number) that named it
    all_given = False
    for e in entries:
        key, sep, val = e.partition("=")
        key = key.strip()
        if not sep:
            raise InvalidArgumentError(
                f"Expected --{what} either as counts 1,0,2 or as NAME=K entries, not both, but got {text!r}."
            )
        try:
            k = int(val)
        except ValueError:
            raise InvalidArgumentError(
                f"Expected an integer count after {key}= in --{what}, but got {val!r}."
            ) from None
        if k < 0:
            raise InvalidArgumentError(f"Expected non-negative counts in --{what}, but got {e!r}.")
        if key == "all":
            if all_given or given:
                why = "`all` is given twice" if all_given else f"it follows `{next(iter(given.values()))}`"
                raise InvalidArgumentError(
                    f"Expected all=K at most once in --{what}, and first (the default for the sites not named), "
                    f"but {why}."
                )
            counts = [k] * len(names)
            all_given = True
            continue
        if key.isdigit():
            pos = int(key)
            if not 1 <= pos <= len(names):
                raise InvalidArgumentError(
                    f"Expected site numbers 1..{len(names)} in --{what}, but got {pos}."
                )
            i = pos - 1
        elif key in index:
            i = index[key]
        else:
            shown = ", ".join(n for n in names[:8] if n)
            more = f", ... ({len(names)} in all)" if len(names) > 8 else ""
            known = f"the sites are {shown}{more}" if shown else f"the sites are numbered 1..{len(names)}"
            raise InvalidArgumentError(
                f"Expected --{what} to name fault sites, but {key!r} is none "
                f"({known}; `faultbound inspect` lists them)."
            )
        if i in given:
            site = names[i] or str(i + 1)
            twice = f"`{site}` is given twice" + (f" (as `{given[i]}` and `{key}`)" if given[i] != key else "")
            raise InvalidArgumentError(f"Expected each fault site once in --{what}, but {twice}.")
        given[i] = key
        counts[i] = k
    return counts
