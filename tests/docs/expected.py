"""What each example prints when it works: the lines a reader would check, as patterns.

Shared by the script tests and the notebook tests, so both forms are held to the same output.
"""

from __future__ import annotations

EXPECTED: dict[str, list[str]] = {
    "hyperparameter_sweep": [
        r"^COMPLETED$",
        r"^\{'C': 0\.1, 'gamma': 0\.01, 'accuracy': 0\.\d+\}$",
        # 6 fits; an RBF SVC on the digits with C=10, gamma=0.1 beats 0.95 in every fold split
        r"^best: \{'C': 10\.0, 'gamma': 0\.1, 'accuracy': 0\.9[5-9]\d*\}$",
    ],
    "map_reduce": [
        r"^COMPLETED$",
        r"^histogram: \{2: 2, 3: 15, 4: 143, 5: 1427, 6: 1429, 7: 1429, 8: 1429, 9: 1427, "
        r"10: 1413, 11: 1286\}$",
        r"^items counted: 10000$",
    ],
    "dynamic_sublattice": [
        r"^COMPLETED$",
        r"^counts: \[4, 2, 3, 5\] total: 14$",
        r"^sublattice: :sublattice:count_each electrons: 4$",
    ],
    "etl_pandas": [
        r"^source files: \['2024-05-01', '2024-05-02'\]$",
        r"^COMPLETED$",
        r"^ +east +42\.0$",
        r"^ +north +150\.0$",
        r"^ +south +180\.0$",
        r"^written to: .*/warehouse/summary\.csv$",
        r"^south,180\.0$",  # the file the transfer wrote, read back
    ],
    "dir_trigger_pipeline": [
        r"^first run: COMPLETED \{'a\.txt': 2, 'b\.txt': 3\}$",
        r"^second run: COMPLETED \{'a\.txt': 2, 'b\.txt': 3, 'c\.txt': 1, 'd\.txt': 2\}$",
        r"^stopped; runs started by the trigger: 1$",
    ],
    "gpu_executor": [
        r"^GPU workers: none: training on CPU workers$",
        r"^COMPLETED$",
        r"^\{'shard': 1\.0, 'loss': 0\.125, 'device': 'cpu', 'worker': .+\}$",
        r"^ran on: .* devices: \['cpu'\]$",
    ],
    "recover_with_redispatch": [
        r"^FAILED$",
        r"^Node \d+ \(parse\) failed: ValueError: invalid literal for int\(\) with base 10: 'n/a'$",
        r"^COMPLETED result: \{'squares': 14, 'values': 3\}$",
        r"^reused nodes: 4 \['expensive', 'expensive', 'expensive', 'expensive'\]$",
    ],
    "notebook_features": [
        r"^\['PROGRAMMING!', 'LIGHTHOUSE!', 'INTERPRETATION!'\]$",
    ],
}


def missing(expected: list[str], text: str) -> list[str]:
    """The patterns no line of ``text`` matches."""
    import re

    return [p for p in expected if not re.search(p, text, re.MULTILINE)]
