"""The frozen splits of the decisions benchmark (issue 15, point 1): which scenarios `dev` and `test` hold.

Fixed on 2026-12-02, before any tuning on the widened simulator. `dev` is for looking and tuning; `test` is never
tuned on and is the only split whose figures the README quotes. A scenario is named by (split seed, family, index):
its seed is derived from those three alone, so adding a family later changes no existing scenario. See
`benchmarks/README.md` for the protocol.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

BAD_FAMILIES = (
    "error_regression", "latency_regression", "memory_leak", "cpu_saturation", "crash_loop", "slow_burn",
    "late_leak", "mild_regression",
)
"""Releases that are worse than the one they replace. `mild_regression` stays below the threshold by design: it is
reported on its own, as neither a breach to catch nor a healthy release to leave alone."""
HEALTHY_FAMILIES = (
    "healthy_warmup", "healthy_cache_plateau", "healthy_traffic_surge", "healthy_noisy_old_pod",
    "healthy_scrape_gaps", "healthy_counter_resets", "healthy_seasonal",
)
"""Releases as good as the one they replace, each with one confounder that looks like a regression."""
FAMILIES = BAD_FAMILIES + HEALTHY_FAMILIES


@dataclass(frozen=True)
class Split:
    """`count` scenarios of each family, drawn from `seed`."""

    name: str
    seed: int
    count: int


SPLITS = {
    "dev": Split("dev", seed=15_001, count=8),
    "test": Split("test", seed=15_907, count=8),
}
"""Frozen: never change these numbers. Another split (e.g. a larger test) gets a new name and a new seed."""


def scenario_seed(split_seed: int, family: str, index: int) -> int:
    """The seed of scenario `index` of `family` in a split: independent of which other families exist."""
    return int(np.random.SeedSequence([split_seed, zlib.crc32(family.encode()), index]).generate_state(1)[0])
