"""Summarise a ``py-spy record -f raw`` file: where the non-idle samples went.

    python benchmarks/fanout/pyspy_summary.py /tmp/quoteflow-profile-S1.raw [TOP]

Prints the share of samples per function and line, "self" (the innermost frame) and
"inclusive" (anywhere on the stack). Used by ``profile.sh``.
"""

from __future__ import annotations

import sys
from collections import Counter


def summarise(path: str, top: int = 20) -> str:
    """The two tables for the raw py-spy file ``path``."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    out = [f"samples: {total}", "", "self:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "inclusive:"]
    out += [f"  {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top + 10)]
    return "\n".join(out)


if __name__ == "__main__":
    print(summarise(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20))
