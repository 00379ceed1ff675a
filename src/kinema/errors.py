"""The one exception type a user sees."""


class KinemaError(Exception):
    """An error the user can fix: the message says what to do; the CLI prints it as one line, no traceback."""


def require(ok: bool, name: str, value, rule: str) -> None:
    """One field's check: KinemaError "NAME VALUE: RULE" when not ok (kinema.config.from_dict says
    where the field is: the recipe file and its section)."""
    if not ok:
        raise KinemaError(f"{name} {value!r}: {rule}")


def at_least(obj, minimum: float, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        require(value >= minimum, name, value, f"must be at least {minimum}")


def fractions(obj, *names: str, below_one: bool = False) -> None:
    """Each field in [0, 1] (or [0, 1) with below_one)."""
    for name in names:
        value = getattr(obj, name)
        require(0 <= value < 1 if below_one else 0 <= value <= 1, name, value,
                "must be in [0, 1)" if below_one else "must be in [0, 1]")
