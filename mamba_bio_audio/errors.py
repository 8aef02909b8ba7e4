"""Errors that are the user's to fix (a bad path, a malformed file, a wrong config value).

The command line prints them as one line, `error: <message>`, and exits with status 2, without a
traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in the user's input; the message names the file or argument and what was expected."""


class ConfigError(UserError, ValueError):
    """A config file, preset or key=value override that is not valid."""


class DataError(UserError, ValueError):
    """A data file that cannot be used (missing, empty, malformed, too short)."""


class CheckpointError(UserError, ValueError):
    """A checkpoint folder that is missing files or belongs to another kind of model."""


class RunComplete(Exception):
    """Nothing to do: `--resume` of a run that has already finished (the CLI exits with 0)."""
