"""Model errors a user fixes by changing a ``model.*`` config value; ``train.py`` prints them as one line."""


class ConfigError(ValueError):
    """A ``model.*`` config value is invalid; the message names the key and the valid choices."""
