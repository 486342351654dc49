"""One error style for every input problem.

Every message names the thing that is wrong (a file or an option), says what was wrong with it, and,
where it helps, what was expected. The CLI prints ``error: <message>`` on one line and exits with the
code of the exception class.
"""

from __future__ import annotations

from pathlib import Path

#: Exit codes, documented in the README.
EXIT_OK = 0
EXIT_AUDIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_GATES_FAILED = 3  # the audit ran and was written, and at least one release gate failed


class AuditError(Exception):
    """Base class of errors the CLI turns into a one-line message and an exit code."""

    exit_code = EXIT_AUDIT_FAILED

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line

    @property
    def message(self) -> str:
        return str(self)


class InputError(AuditError):
    """Bad usage or bad input: a file or option that cannot be used as given (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class AuditFailed(AuditError):
    """The audit itself failed after its inputs were accepted (exit code 1)."""

    exit_code = EXIT_AUDIT_FAILED


def input_error(
    subject: str | Path, problem: str, *, expected: str | None = None, hint: str | None = None
) -> InputError:
    """Build an :class:`InputError` in the project's one style.

    ``subject`` is a file path or an option name (``--resize``); ``problem`` says what was found.
    The result reads ``<subject>: <problem> (expected <expected>). <hint>``.
    """
    text = f"{subject}: {problem}"
    if expected:
        text += f" (expected {expected})"
    if hint:
        text += f". {hint[:1].upper()}{hint[1:]}"
    return InputError(text)
