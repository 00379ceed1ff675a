"""The one exception type a user sees: its message says what to do; the CLI prints it without a traceback."""


class KinemaError(Exception):
    pass
