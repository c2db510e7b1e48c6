"""Named user-facing errors. The CLI turns any PgolfError into one line and exit code 2."""


class PgolfError(Exception):
    """Base for problems with user input or data; the message says how to fix it."""


class ConfigError(PgolfError, ValueError):
    """A preset, override or config file that does not fit the schema."""


class DataError(PgolfError, ValueError):
    """A shard, manifest, corpus or tokenizer that is missing or malformed."""


class NotImplementedYet(PgolfError):
    """A command owned by a later milestone."""
