class UserError(Exception):
    """Bad input from the user (a parameter, a file, a run): printed without a traceback."""
