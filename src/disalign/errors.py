"""The one exception type that means "the user asked for something we cannot do".

The CLI turns it into a single line on stderr and exit status 2; everything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input: a path, a config value, a data file."""
