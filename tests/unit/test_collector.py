"""app.tune_collector: the `run` process collects young objects rarely and freezes its start-up.

Run in a child interpreter: the collector's settings are the whole process's, not a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys

from worker.app import YOUNG_COLLECTION_THRESHOLD

PROBE = """
import gc, json
defaults = gc.get_threshold()
from worker.app import tune_collector
tune_collector()
seen = {"defaults": defaults, "now": gc.get_threshold(), "frozen": gc.get_freeze_count()}
print(json.dumps(seen))
"""


def test_young_collections_are_rarer_and_start_up_objects_are_left_out() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    seen = json.loads(out)
    assert seen["now"][0] == YOUNG_COLLECTION_THRESHOLD > seen["defaults"][0]
    assert seen["now"][1:] == seen["defaults"][1:]  # the older generations keep their pace
    # Everything imported so far (the worker, aiokafka, aiobotocore, pydantic) is frozen.
    assert seen["frozen"] > 10_000
