"""Person Names: normalisation for case- and accent-insensitive matching (PS3.4 C.2.2.2.1), and the
PN form of a name people write."""

from __future__ import annotations

import re
import unicodedata

_SPACES = re.compile(r"\s+")


def normalize_pn(value: str) -> str:
    """Fold a PN (all component groups) to lower case without accents, components as spaces.

    ``"Müller^Jürgen=ミュラー"`` → ``"muller jurgen=ミュラー"``. The ``=`` between component groups is
    kept so a query can still be applied to each group. Wildcards ``*`` and ``?`` pass through, so
    the same function normalises stored values and query patterns.
    """
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = stripped.casefold().replace("ł", "l").replace("ø", "o").replace("đ", "d").replace("ß", "ss")
    groups = [_SPACES.sub(" ", g.replace("^", " ")).strip() for g in folded.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def person_name(name: str) -> str:
    """``Jane Doe`` → ``Doe^Jane`` (PS3.5 6.2 PN); a single word is the family name, ``doc^`` (the caret
    says it is one component on purpose)."""
    parts = name.replace("^", " ").replace("=", " ").split()
    if len(parts) < 2:
        return f"{parts[0] if parts else 'Unknown'}^"
    return f"{parts[-1]}^{' '.join(parts[:-1])}"
