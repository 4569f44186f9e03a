"""One exception type for input the user can fix; the CLI turns it into exit code 2."""


class HubertkitError(Exception):
    """Bad input or a broken precondition, with a message that says what to do."""
