"""The two error types the CLI maps to exit codes.

Library code raises these; the CLI prints the message on one line and exits
with the code. Anything else escaping is a bug, reported as such.
"""


class InspectorError(Exception):
    """Bad input or usage: the user can fix it. Exit code 2."""

    exit_code = 2


class CheckFailed(Exception):
    """A check ran and failed (audit gate, parity check). Exit code 1."""

    exit_code = 1
