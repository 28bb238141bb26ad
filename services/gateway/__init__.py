"""The WebSocket gateway: terminates client protocols and talks to the services over NATS."""
