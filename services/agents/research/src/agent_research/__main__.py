"""`python -m agent_research`: run the research agent."""

from a2amesh.agent import serve
from agent_research.agent import ResearchAgent


def main() -> None:
    serve(ResearchAgent)


if __name__ == "__main__":
    main()
