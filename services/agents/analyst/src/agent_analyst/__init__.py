"""The data analyst agent: descriptive statistics of a table sent as a data part or as CSV text."""
