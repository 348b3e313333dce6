"""How examples are compared across pools: a text's normalized key (near-duplicates share it) and the
groups that examples sharing a passage, question or sentence form.

Both exist so that no pool holds a copy, or a sibling, of an example in another: a test example whose
passage and question the student was trained on (with another answer option) measures memory, not
generalization.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """Lowercase, punctuation replaced by spaces, whitespace collapsed: ``"Not  GOOD!"`` -> ``"not good"``."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def text_key(text: str) -> str:
    """sha1 hex digest of the normalized text: equal for texts that differ only in case, punctuation
    or whitespace."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()


def group_ids(keys: list[tuple[str, ...]]) -> np.ndarray:
    """Group ids [N] (int64, numbered 0, 1, ... in order of first appearance) of N examples, each with
    its group keys (one per `group` template): examples sharing any key, compared after
    `normalize_text`, are one group, transitively (a sentence pair shares a group with every pair that
    holds either sentence). An empty key joins nothing, so a row with a blank passage stays alone
    instead of joining every other blank one."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]  # path halving keeps the trees flat
            i = parent[i]
        return i

    owner: dict[str, int] = {}  # normalized key -> the first example that had it
    for i, row in enumerate(keys):
        for key in row:
            norm = normalize_text(key)
            if not norm:
                continue
            if norm in owner:
                a, b = root(owner[norm]), root(i)
                parent[max(a, b)] = min(a, b)  # the earlier example stays the root
            else:
                owner[norm] = i
    # A root is its group's first example, so numbering the roots in order numbers groups by first appearance.
    _, inverse = np.unique([root(i) for i in range(len(keys))], return_inverse=True)
    return inverse.astype(np.int64).reshape(-1)
