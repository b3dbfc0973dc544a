"""Did-you-mean suggestions for spec keys and names (shared by the spec parser and the op catalogue)."""
from __future__ import annotations

import difflib
from typing import Iterable, Optional


def suggest(word: str, candidates: Iterable[str]) -> Optional[str]:
    """The closest candidate to `word`, if any is close enough to be a likely typo."""
    candidates = [str(c) for c in candidates]
    lowered = {c.lower(): c for c in candidates}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def suggest_text(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' or ''."""
    best = suggest(word, candidates)
    return f" (did you mean '{best}'?)" if best else ""
