"""Moved to :mod:`faultbound.apps.training`; this module only re-exports it.

It stays while ``faultbound.report.figures`` (edited elsewhere) still imports from here; once that
file imports :mod:`faultbound.apps.training`, delete this one.
"""

from faultbound.apps import training as _training
from faultbound.apps.training import *  # noqa: F403

__all__ = list(_training.__all__)
