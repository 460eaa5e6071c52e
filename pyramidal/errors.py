"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class PyramidalError(Exception):
    """A problem with the user's input (file, option, data) rather than a bug."""


class OptionError(PyramidalError, ValueError):
    """A bad option value (a model option, a tile size, ...); also a ValueError for library callers."""
