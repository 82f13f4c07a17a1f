"""One way to fail on bad input: a one-line message, exit code 2, no traceback.

Entry points wrap their main() with `run_cli(main)`; library code raises UserError
with a message that names the problem and the fix.
"""
import sys


class UserError(Exception):
    """Bad input from the user (flag, file, config). Printed as one line, exit 2."""


def run_cli(main, argv=None):
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        msg = " ".join(str(e).split())  # always one line
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
