"""User-facing errors: one line, exit status 2, no traceback (see cli.main)."""


class LmtuneError(Exception):
    """A problem the user can fix (bad config, bad data, missing file).

    The CLI prints ``lmtune: error: <message>`` and exits with status 2.
    """

    exit_code = 2


class ConfigError(LmtuneError):
    """The run configuration is invalid; the message names the key."""


class DataError(LmtuneError):
    """A data file is invalid; the message names file, line and field."""


class ModelError(LmtuneError):
    """A model cannot be found or loaded."""


class ExportError(LmtuneError):
    """A run or model cannot be exported, quantised, chatted with or served as asked."""


class MissingExtraError(LmtuneError):
    """A feature's optional packages are not installed; the message names the extra that installs them."""
