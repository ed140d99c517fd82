"""One error type for bad input: the CLI prints its message alone, with no traceback."""
from __future__ import annotations

import difflib
from typing import Iterable


class LabError(Exception):
    """Bad input or an unmet requirement. The message names what was wrong and what would be right."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a close choice exists, else ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
