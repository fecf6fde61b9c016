"""The readers: one module per source of a model, each turning it into a flat chain of ops.

* :mod:`.onnx` -- ``.onnx`` files (the ``onnx`` package), rules keyed by ONNX op type;
* :mod:`.export` -- ``.pt2`` ``torch.export`` programs, rules keyed by aten op name, after
  :mod:`.pt2_guard` has checked that nothing in the archive can run code;
* :mod:`.module` -- an ``nn.Sequential`` in memory (``Network.from_torch``) or pickled in a
  ``.pt`` / ``.pth`` file (only unpickled when trusted), rules keyed by module type;
* :mod:`._common` -- the chain tracer of the two graph formats, the one batch-norm fold, helpers;
* :mod:`.files` -- :func:`~faultbound.network.readers.files.load`, which picks the reader from the
  file extension.

Each reader has a plain ``RULES`` dict (operator -> rule function) for its affine, identity and
algebra nodes; adding such an operator to a reader is one entry there plus its rule, in that one
file. Activations are not in the readers: each activation class of
:mod:`faultbound.network.activations` names its ``torch_modules``, ``onnx_ops`` and ``aten_ops``
and builds itself from them, and every reader looks a name up in that registry (after its
``RULES``) when it meets it, so a registered activation is read everywhere. Every reader ends in
:meth:`faultbound.network.core.Network.from_chain` and is checked against the model on probe
inputs by :func:`faultbound.network.core.check_against`.

This package's ``__init__`` imports nothing: :mod:`faultbound.network.core` imports
:mod:`.module` (for ``Network.from_torch``), so nothing imported on the way there may import core.
"""
