"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a single line on stderr and exit status 2; everything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a path, a config value, a data file."""


class DisalignWarning(UserWarning):
    """Something the user should know that does not stop the run (a fallback taken); the CLI shows
    it as one line on stderr."""


def validate_config(model_class, data, what: str):
    """`model_class.model_validate(data)`, with a pydantic error turned into one UserError line."""
    from pydantic import ValidationError

    try:
        return model_class.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{what}: {where}: {message}") from None
