"""Helpers of ``notebook_features``: a module next to a notebook, not installed anywhere.

The workers cannot import it, so the SDK sends it by value (its functions and electrons
travel with the dispatch); see docs/how-to/notebooks.md.
"""

import covalent as ct

STOP_WORDS = {"a", "an", "and", "the", "of", "to"}


def normalise(word):
    return word.strip(".,;:!?").lower()


@ct.electron
def keywords(text):
    """An electron defined in a helper module."""
    words = (normalise(w) for w in text.split())
    return sorted({w for w in words if w and w not in STOP_WORDS})
