"""The error the CLI reports as a message: input that is wrong in a way the user can fix."""


class UserError(ValueError):
    """Bad recipe, data, model choice or output folder; the message names the problem and the fix."""


class DataError(UserError):
    """Data that cannot be trained on as configured; the message names the fix."""
