"""The mesh registry: a live, queryable index of every agent's retained Agent Card, kept in Redis."""
