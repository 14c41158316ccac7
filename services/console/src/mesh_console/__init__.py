"""The mesh's web console: a client of the coordinator (A2A over HTTP+JSON), the registry and the task store."""
