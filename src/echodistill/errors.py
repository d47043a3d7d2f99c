"""The one base class for mistakes a user can fix (bad config, bad data, missing files).

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix. The message names the file/item/key and says what to do."""


class ConfigError(UserError, ValueError):
    """A user-facing configuration mistake; the message says which key and what to do.

    Defined here (re-exported by ``config``) so that modules ``config`` validates with, such as
    ``train/plugins.py``, need not import ``config`` back."""
