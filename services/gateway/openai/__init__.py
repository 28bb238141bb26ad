"""OpenAI Realtime compatible protocol adapter (``/v1/realtime``), sans-I/O."""
