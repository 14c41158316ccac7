"""`python -m agent_reviewer`: run the reviewer agent."""

from a2amesh.agent import serve
from agent_reviewer.agent import ReviewerAgent


def main() -> None:
    serve(ReviewerAgent)


if __name__ == "__main__":
    main()
