"""Streaming text-to-speech service: Piper (English) and espeak-ng (Mandarin), both run
as separate programs, behind `shared.worker.WorkerRuntime`."""
