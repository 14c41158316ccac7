"""`python -m agent_analyst`: run the analyst agent."""

from a2amesh.agent import serve
from agent_analyst.agent import AnalystAgent


def main() -> None:
    serve(AnalystAgent)


if __name__ == "__main__":
    main()
