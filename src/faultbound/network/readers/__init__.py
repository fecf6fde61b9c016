"""The readers: one per source of a model, each building the DAG
(:class:`~faultbound.network.graph.GraphNetwork`).

* :mod:`.graph_onnx` -- ``.onnx`` files (the ``onnx`` package), rules keyed by ONNX op type;
* :mod:`.graph_export` -- ``torch.export`` programs, rules keyed by aten op name: ``.pt2`` files,
  after :mod:`.pt2_guard` has checked that nothing in the archive can run code, and ``nn.Module`` s
  (exported in this process);
* :mod:`.module` -- what comes around reading a module: its input shape when none is given, its
  registered activation modules, training mode, and ``.pt`` / ``.pth`` pickles (only unpickled
  when trusted);
* :mod:`._fuse` -- activations written out as elementwise algebra, fused into one node;
* :mod:`._common` -- the batch-norm map, the one-line refusal, helpers;
* :mod:`.files` -- :func:`~faultbound.network.readers.files.load`, which picks the reader from the
  file extension and gives the DAG's layered view (:func:`faultbound.network.passes.layered_view`)
  when it has one.

Each reader has a plain rules dict (operator -> rule function); adding an operator to a reader is
one entry there plus its rule, in that one file. Activations are not in the readers: each
activation class of :mod:`faultbound.network.activations` names its ``torch_modules``, ``onnx_ops``
and ``aten_ops`` and builds itself from them, and every reader looks a name up in that registry
(after its rules) when it meets it, so a registered activation is read everywhere. Every DAG is
checked against the model on probe inputs by :func:`faultbound.network.core.check_against`.

This package's ``__init__`` imports nothing.
"""
