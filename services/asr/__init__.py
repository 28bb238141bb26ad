"""ASR replica: Silero VAD endpointing and Whisper transcription per call session.

Layers, bottom up:

* `endpointer` - sans-I/O turn detection over per-window speech probabilities;
* `audiobuffer`, `dedup` - stream bookkeeping (stream time, prefix padding, replays);
* `vad` - Silero VAD windows; `decoder` - faster-whisper with decode caps;
* `pool` - the replica's shared decode thread; `session` - one call; `engine` - the
  `shared.worker.Engine` the runtime drives; `__main__` - wiring.
"""
