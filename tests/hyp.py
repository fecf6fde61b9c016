"""Shared settings of the property tests.

``examples(n)`` is the number of examples a property test draws: ``n`` in ``make test``, and
``n * FB_SOUNDNESS_SCALE`` under ``make soundness``, which also runs every test marked
:data:`soundness` (a bound compared with brute force, or a measurement with a certificate) over many
random ``--hypothesis-seed`` values.
"""

from __future__ import annotations

import os

import pytest

#: Marks a property test that compares a certificate with brute force or with measurements.
soundness = pytest.mark.soundness


def examples(n: int) -> int:
    """``n`` scaled by ``FB_SOUNDNESS_SCALE`` (default 1)."""
    scale = float(os.environ.get("FB_SOUNDNESS_SCALE", "1"))
    return max(1, int(round(n * scale)))
