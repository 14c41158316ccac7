"""Fault tests: real processes, a bounded load through the coordinator, one fault, then a tally from the store."""
