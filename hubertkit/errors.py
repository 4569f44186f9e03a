"""One exception type for input the user can fix; the CLI turns it into exit code 2."""

import difflib


class HubertkitError(Exception):
    """Bad input or a broken precondition, with a message that says what to do."""


def did_you_mean(word: str, choices) -> str:
    """``"; did you mean a, b?"`` for the choices closest to a mistyped ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""
