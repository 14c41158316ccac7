"""`meshctl` (and `python -m meshctl`): the mesh's command-line client."""

from meshctl.app import app


def main() -> None:
    app(prog_name="meshctl")


if __name__ == "__main__":
    main()
