"""Errors that are the user's to fix: printed as one sentence, never as a traceback."""


class ConfigError(ValueError):
    """A configuration value or combination that cannot work, with what to do instead."""
