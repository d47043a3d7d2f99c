"""The one base class for mistakes a user can fix (bad config, bad data, missing files).

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its traceback.
A full disk is one of them (``disk_full``): the line names the folder, and nothing partial is left.
"""

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix. The message names the file/item/key and says what to do."""


class ConfigError(UserError, ValueError):
    """A user-facing configuration mistake; the message says which key and what to do.

    Defined here (re-exported by ``config``) so that modules ``config`` validates with, such as
    ``train/plugins.py``, need not import ``config`` back."""


@contextmanager
def disk_full(folder, what: str, cleanup=(), resume: str = "rerun the same command"):
    """Turn running out of space (ENOSPC, EDQUOT) inside the block into one UserError naming ``folder``;
    ``cleanup``: partial files or folders the block was writing, removed first (they would hold space)."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        for p in cleanup:
            p = Path(p)
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise UserError(f"{folder}: no space left on the device while writing {what}; nothing partial was kept: "
                        f"free space (or choose another folder), then {resume}") from None
