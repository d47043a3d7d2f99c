"""The one base class for mistakes a user can fix (bad config, bad data, missing files).

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix. The message names the file/item/key and says what to do."""
