"""Errors that end a stage with one clear message (and a non-zero exit)."""


class IrtuneError(Exception):
    """Base of every error a stage reports to its user without a traceback."""


class ConfigError(IrtuneError):
    """A params key is unknown, of the wrong type or out of range."""


class DataError(IrtuneError):
    """An input file is malformed; the message names the file and line."""
