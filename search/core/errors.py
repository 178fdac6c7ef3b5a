"""The one error type the CLI turns into a single line and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: a spec field, a file, an address or a storage URL.

    The message is one line that names what is wrong and where; the CLI prints it
    and exits with code 2, without a traceback.
    """

    exit_code = 2
