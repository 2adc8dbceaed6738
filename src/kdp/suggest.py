# suggest: "did you mean" -- the names a mistyped one most likely meant, for
# the messages of kdp's errors and warnings. Knows nothing of what the names are.
from __future__ import annotations

import difflib


def close_matches(word: str, candidates, n: int = 3) -> list[str]:
    """The candidates a mistyped word most likely meant: those it begins (a
    Deployment pod's name without its suffixes), then the closest spellings."""
    candidates = list(dict.fromkeys(candidates))
    prefix = [c for c in candidates if word and c.startswith(word) and c != word]
    close = difflib.get_close_matches(word, candidates, n=n, cutoff=0.6)
    return list(dict.fromkeys(prefix[:n] + close))[:n]


def did_you_mean(word: str, candidates, n: int = 3) -> str:
    """'; did you mean X?' (or 'X, Y or Z?') for a message, '' when nothing is close
    (word '': the candidates themselves, already chosen)."""
    found = close_matches(word, candidates, n) if word else list(candidates)[:n]
    if not found:
        return ""
    if len(found) == 1:
        return f"; did you mean {found[0]}?"
    return f"; did you mean {', '.join(found[:-1])} or {found[-1]}?"
