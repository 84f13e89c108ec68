"""The skills matcher the engine uses: compiled when available.

`from router.engine.matcher import Matcher, COMPILED` gives the Cython matcher
(router.engine.cmatcher, built from ext/matcher.pyx) when it imports, else the
pure-Python reference (router.engine.matcher_ref), which decides identically
but much more slowly; falling back emits one RuntimeWarning at import.  With
ACD_REQUIRE_COMPILED=1 in the environment (CI, `make test`) a missing extension
is an ImportError instead, so a broken build cannot pass unnoticed.
"""
from __future__ import annotations

import os
import warnings

try:
    from router.engine.cmatcher import (FEWEST_CALLS, LEAST_OCCUPIED, LONGEST_IDLE,
                                        MAX_PAIRS_PER_SET, MAX_SETS_PER_CALL, MAX_SKILLS,
                                        MOST_SKILLED, RANDOM, ROUND_ROBIN, Matcher)
    COMPILED = True
except ImportError as exc:
    if os.environ.get("ACD_REQUIRE_COMPILED") == "1":
        raise ImportError(
            "ACD_REQUIRE_COMPILED=1 but the compiled matcher router.engine.cmatcher does not "
            "import; build it with `python setup.py build_ext --inplace` (or reinstall the "
            f"package): {exc}"
        ) from exc
    from router.engine.matcher_ref import (FEWEST_CALLS, LEAST_OCCUPIED,  # type: ignore[assignment]
                                           LONGEST_IDLE, MAX_PAIRS_PER_SET, MAX_SETS_PER_CALL,
                                           MAX_SKILLS, MOST_SKILLED, RANDOM, ROUND_ROBIN, Matcher)
    COMPILED = False
    warnings.warn(
        f"compiled matcher unavailable ({exc}); using the pure-Python reference, "
        "which is much slower", RuntimeWarning, stacklevel=2)

__all__ = ["COMPILED", "FEWEST_CALLS", "LEAST_OCCUPIED", "LONGEST_IDLE", "MAX_PAIRS_PER_SET",
           "MAX_SETS_PER_CALL", "MAX_SKILLS", "MOST_SKILLED", "RANDOM", "ROUND_ROBIN",
           "Matcher"]
