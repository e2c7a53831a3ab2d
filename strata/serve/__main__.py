"""`python -m strata.serve ...`: the same launch line as `strata serve ...`."""

from __future__ import annotations

import sys

from strata.errors import StrataError


def main(argv: list[str] | None = None, prog: str = "python -m strata.serve") -> int:
    """Parse the launch line and serve; a StrataError becomes `Error: ...` and exit code 1."""
    from strata.serve.config import parse_argv
    from strata.serve.server import run

    try:
        run(parse_argv(sys.argv[1:] if argv is None else argv, prog=prog))
    except StrataError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
