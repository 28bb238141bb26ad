"""The Coze-style duplex chat protocol (SPEC 3.4)."""
