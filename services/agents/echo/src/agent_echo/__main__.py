"""`python -m agent_echo`: run the echo agent."""

from a2amesh.agent import serve
from agent_echo.agent import EchoAgent


def main() -> None:
    serve(EchoAgent)


if __name__ == "__main__":
    main()
