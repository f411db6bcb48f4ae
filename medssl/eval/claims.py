"""A plain verdict on a paper's claim from paired differences over seeds (GUIDE item 16).

The reports on real data (``umct_report``, ``contrastive_report``) say for each claim whether it is
reproduced here, in words a reader cannot misread: **reproduced** only when the difference favours
the claim in every paired seed; "reproduced on average" when the mean exceeds the seed spread but
some seed disagrees; **not reproduced** otherwise. Fewer than two pairs: no verdict.
"""

from __future__ import annotations

import statistics

__all__ = ["verdict"]


def verdict(gain: list[float], label: str, unit: str = "Dice") -> str:
    """One line: ``label`` and whether the paired ``gain`` (claim's side minus the other, one value
    per seed, same labeled cases) reproduces it, with mean ± sample sd and n."""
    n = len(gain)
    if n < 2:
        return f"{label}: too few paired seeds to say (n={n})"
    mean, sd = statistics.mean(gain), statistics.stdev(gain)
    if mean > 0 and all(g > 0 for g in gain):
        return f"{label}: **reproduced** (+{mean:.3f} {unit}, better in every seed, n={n})"
    if mean > sd:
        return f"{label}: reproduced on average (+{mean:.3f} ± {sd:.3f}, n={n}), not in every seed"
    if mean > 0:
        return f"{label}: **not reproduced** (+{mean:.3f} ± {sd:.3f}, n={n}: within the seed spread)"
    return f"{label}: **not reproduced** ({mean:+.3f} ± {sd:.3f}, n={n})"
