"""The Volcengine live-voice-call binary protocol (SPEC 3.3)."""
