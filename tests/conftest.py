"""Hypothesis profiles: random exploration on developer machines, a fixed sequence in CI.

Under ``CI`` (set by the CI runner) the property tests run derandomized, so a CI run is
reproducible; locally every run explores new examples. Both print the blob that replays a failure
(``@reproduce_failure``).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", print_blob=True)
settings.register_profile("ci", print_blob=True, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
