"""The one exception type for bad input.

Library code raises `LapnetError` (a `ValueError`) when the caller's input is wrong; the
CLI turns it into one line on stderr and exit code 2.
"""


class LapnetError(ValueError):
    """Bad input: a missing file, a wrong shape, a corrupt checkpoint, ..."""


class CheckpointError(LapnetError):
    """A checkpoint is missing, truncated, corrupt or of a foreign format."""
