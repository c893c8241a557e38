"""Progress reporting for long steps: callbacks `progress(done, total)` backed by tqdm bars.

Library functions take an optional `progress` callable and call it between compiled chunks; they
never print. The CLI turns each long step into a bar (rate and ETA from tqdm), or into nothing
with --quiet.
"""

from __future__ import annotations

import sys
from typing import Callable

ProgressFn = Callable[[int, int], None]


def bar(description: str, unit: str = "step", quiet: bool = False) -> ProgressFn:
    """A callback that draws a tqdm bar on stderr; it closes itself when done reaches total."""
    if quiet:
        return lambda done, total: None
    from tqdm.auto import tqdm

    state: dict = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            # The first report usually arrives after a first chunk that included compilation:
            # start the bar there (initial=done) so the rate and ETA reflect the steady state.
            state["bar"] = tqdm(total=total, initial=done, desc=description, unit=unit, file=sys.stderr,
                                dynamic_ncols=True, leave=True)
        b = state["bar"]
        b.total = total
        b.update(done - b.n)
        if done >= total:
            b.close()
            state.pop("bar")

    return update
