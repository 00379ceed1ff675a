"""The one exception type a user sees."""


class KinemaError(Exception):
    """An error the user can fix: the message says what to do; the CLI prints it as one line, no traceback."""
