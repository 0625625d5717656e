"""HTTP API: controllers per resource and their request/response structs."""
