"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a single line on stderr and exit status 2; everything else is a bug
and keeps its traceback.
"""

import re
from typing import Any

# The user-info part of a URL (`https://user:key@host`) and query parameters that carry a credential.
_URL_USER_INFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)[^\s/?#@]+@")
_URL_SECRET_PARAMETER = re.compile(
    r"([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig|signature)=)[^&#\s'\"]+", re.IGNORECASE
)


def redact_url_secrets(text: str) -> str:
    """`text` with the credentials of every URL in it replaced by [redacted]."""
    return _URL_SECRET_PARAMETER.sub(r"\1[redacted]", _URL_USER_INFO.sub(r"\1[redacted]@", text))


def redact_secrets(value: Any) -> Any:
    """A JSON value with `redact_url_secrets` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact_url_secrets(value)
    if isinstance(value, dict):
        return {redact_secrets(key): redact_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_secrets(item) for item in value]
    return value


class UserError(Exception):
    """A mistake in the user's input: a path, a config value, a data file. Its message never
    shows a credential written into a URL."""

    def __init__(self, message: object = ""):
        super().__init__(redact_url_secrets(str(message)))


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
