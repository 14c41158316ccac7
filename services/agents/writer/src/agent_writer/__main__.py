"""`python -m agent_writer`: run the writer agent."""

from a2amesh.agent import serve
from agent_writer.agent import WriterAgent


def main() -> None:
    serve(WriterAgent)


if __name__ == "__main__":
    main()
