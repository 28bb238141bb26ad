"""The common library of every service: wire messages, codec, subjects, bus, audio,
settings, model files, health endpoints and metrics."""
