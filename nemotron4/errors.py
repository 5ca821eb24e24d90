"""Errors a user can act on. The CLI prints them as one clear line, without a traceback."""


class UserError(Exception):
    """Bad input or configuration: the message says what was wrong, where, and what to do."""


class ConfigError(UserError, ValueError):
    """A configuration value is invalid; the message names the field and what is expected."""
