"""The reviewer agent: scores a Markdown report (length, structure, citations, readability) for an audience."""
