"""The one exception type for mistakes a user can fix (bad paths, keys, files).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class CosfaceError(Exception):
    """A user-facing error whose message names the bad file, line, key or value."""
