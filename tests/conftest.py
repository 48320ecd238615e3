"""Suite-wide settings.

Hypothesis runs derandomized by default: the same cases every run, so the suite (and CI) never
depends on the draw of the day. ``DRONE_FUZZ_RANDOM=1`` draws fresh cases instead (for fuzzing
sessions; failures are kept in ``.hypothesis/`` and replayed first next time).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.register_profile("random", print_blob=True)
settings.load_profile("random" if os.environ.get("DRONE_FUZZ_RANDOM") == "1" else "deterministic")

# The real Gadgetron server of the tests marked `gadgetron` (skipped without one) and the hook that adds
# its log's tail to a failed test's report.
from gadgetron_server import gadgetron_server, gadgetron_with_storage, pytest_runtest_makereport  # noqa: E402,F401
