"""The writer agent: turns research passages into a structured Markdown report with numbered citations."""
