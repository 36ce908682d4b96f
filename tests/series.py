"""Write test series the way Prometheus's promqltest does: "0.1 0.2 _ 0.5x3" (`_` is a missing sample,
`AxN` is N copies of A, not N+1 as in promqltest; `A+BxN` is A then N steps of +B, N+1 values)."""

from __future__ import annotations

import re

_STEP = re.compile(r"^(-?[\d.e]+)([+-][\d.e]+)?x(\d+)$")


def expand(text: str) -> list[float | None]:
    values: list[float | None] = []
    for token in text.split():
        if token == "_":
            values.append(None)
            continue
        match = _STEP.match(token)
        if not match:
            values.append(float(token))
            continue
        start, delta, count = float(match.group(1)), float(match.group(2) or 0), int(match.group(3))
        if match.group(2):
            values.extend(start + delta * i for i in range(count + 1))
        else:
            values.extend([start] * count)
    return values
