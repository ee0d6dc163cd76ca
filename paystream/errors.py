"""One error base for operating errors, with a `retriable` flag callers branch on.

Programmer errors are assertions and crash; these are the errors an operator
can meet (a service down, bad input, a wrong setting) and they print as one
clear line, never a stack trace.
"""


class PaystreamError(Exception):
    """An expected operating error with a message meant for a person."""

    retriable: bool = False


class SettingsError(PaystreamError):
    """A setting is missing, mistyped or out of range."""


class ServiceUnavailableError(PaystreamError):
    """Kafka or PostgreSQL cannot be reached right now; trying again may work."""

    retriable = True


class StackError(PaystreamError):
    """The local stack could not be started, stopped or inspected."""


class ConcurrentChangeError(PaystreamError):
    """Another consumer changed rows this transaction relied on; retrying sees the new state."""

    retriable = True


class SchemaError(PaystreamError):
    """The database lacks tables or columns this code needs: not migrated, or migrated by an older paystream."""
