"""The HTTP API (Qinling v1 compatible): handlers parse, call a service, shape the reply."""
