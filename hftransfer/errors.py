"""The error the CLI reports as a message: input that is wrong in a way the user can fix."""


class UserError(ValueError):
    """Bad recipe, data, model choice or output folder; the message names the problem and the fix."""
