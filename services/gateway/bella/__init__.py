"""Bella OpenAPI realtime protocol (SPEC 3.1): codec, client messages and call adapter."""
