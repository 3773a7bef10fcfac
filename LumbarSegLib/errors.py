"""Errors the pipeline reports to the user as one line, each with its exit code."""

from __future__ import annotations


class LumbarSegError(Exception):
    """Base class: an expected failure that is reported as one line, no traceback."""

    exit_code = 1


class InputError(LumbarSegError):
    """The input is missing, unreadable, or not a usable CT volume."""

    exit_code = 3


class NoSpineError(LumbarSegError):
    """No lumbar spine was found in the field of view."""

    exit_code = 4


class ResourceLimitError(LumbarSegError):
    """The job would not fit in the available memory."""

    exit_code = 5


class OutputExistsError(LumbarSegError):
    """An output file exists and ``--overwrite`` was not given."""

    exit_code = 6


class ModelError(LumbarSegError):
    """Model weights are missing or do not match the network."""

    exit_code = 7


class CancelledError(LumbarSegError):
    """The run was cancelled (Ctrl-C, SIGTERM or a cancel request)."""

    exit_code = 130
