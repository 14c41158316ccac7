"""`meshctl`: placeholder entry point until the CLI lands (issue #3)."""

import sys


def main() -> None:
    print("meshctl is not built yet", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
