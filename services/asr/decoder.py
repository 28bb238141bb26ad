"""Whisper (faster-whisper / CTranslate2) decoding of one utterance, with caps.

Whisper is not streaming: every call decodes a whole utterance (or the growing buffer
for a partial). The call runs the faster-whisper model's own pieces (feature extractor,
``encode``, ``get_prompt``, CTranslate2 ``generate``) rather than ``transcribe`` for two
reasons, both measured on 2 cores:

* **Encoder context.** Whisper pads every input to 30 s, and the encoder dominates the
  cost: 1.7-1.9 s for a 3 s utterance on 2 busy cores. CTranslate2 accepts shorter mel
  inputs; encoding ``max(audio + 1 s, min_context_s)`` (10 s by default) took
  0.4-0.6 s for the same 9 test sentences: 6 identical transcripts, 1 better, 2 with one
  word worse. Much shorter contexts (1-5 s) made Whisper repeat itself. 30 s restores
  Whisper's stock padding.
* **Language detection** reuses that encoder output instead of encoding twice.

Greedy decoding (beam 1) with no temperature fallback (each fallback re-decodes the
window, multiplying the worst case), no timestamps, no previous-text conditioning.
Whisper can loop (one Mandarin clip looped for 15.6 s when measured): the number of new
tokens is capped in proportion to the audio length, and looped output is collapsed.
A CTranslate2 call cannot be interrupted, so the wall-time guard (`wall_guard_s`) is
applied by the caller, which stops waiting; the token cap bounds the thread's time.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import _LANGUAGE_CODES, Tokenizer
from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

from services.asr.audiobuffer import SAMPLE_RATE, Samples
from shared.errors import EngineError

# Whisper's decoder context is 448 tokens; the prompt takes a few of them.
_MODEL_MAX_NEW_TOKENS = 400
_WINDOW_S = 30
_FRAMES_PER_S = 100  # mel hop of 10 ms
_LOOP_COMPRESSION_RATIO = 2.4  # Whisper's own threshold for repetitive output
_LOG_PROB_THRESHOLD = -1.0

# Whisper's Mandarin output drifts between simplified and traditional script; a prompt
# written in simplified Chinese steers it to simplified.
_PROMPTS = {"zh": "以下是普通话的句子。"}

_LANGUAGE_ALIASES = {"cmn": "zh", "zh-cn": "zh", "zh-hans": "zh", "mandarin": "zh"}
_REPEAT = re.compile(r"(.{1,12}?)\1{3,}", re.DOTALL)


@dataclass(frozen=True)
class DecodeOptions:
    beam_size: int = 1
    tokens_per_second: float = 8.0  # fast Mandarin runs ~5 characters/s, up to 2 tokens each
    min_new_tokens: int = 16
    max_new_tokens: int = 224
    guard_base_s: float = 2.0
    guard_per_audio_s: float = 1.0
    no_speech_threshold: float = 0.6
    min_context_s: float = 10.0


def decode_cap(audio_s: float, options: DecodeOptions) -> int:
    """Most new tokens a decode of ``audio_s`` seconds may produce."""
    scaled = math.ceil(max(audio_s, 0.0) * options.tokens_per_second) + options.min_new_tokens
    return max(1, min(scaled, options.max_new_tokens, _MODEL_MAX_NEW_TOKENS))


def wall_guard_s(audio_s: float, options: DecodeOptions) -> float:
    """How long a caller waits for one decode of ``audio_s`` seconds before giving up."""
    return options.guard_base_s + max(audio_s, 0.0) * options.guard_per_audio_s


def context_frames(audio_frames: int, min_context_s: float) -> int:
    """Mel frames the encoder sees: the audio plus 1 s, at least ``min_context_s``, at most 30 s."""
    wanted = max(audio_frames + _FRAMES_PER_S, int(min_context_s * _FRAMES_PER_S))
    # Whole seconds, so lengths repeat and CTranslate2 reuses its buffers.
    rounded = math.ceil(wanted / _FRAMES_PER_S) * _FRAMES_PER_S
    return min(rounded, _WINDOW_S * _FRAMES_PER_S)


def normalize_language(code: str | None) -> str | None:
    """A Whisper language code for a client's tag (``en-US`` -> ``en``); None: detect."""
    if not code:
        return None
    tag = code.strip().lower().replace("_", "-")
    tag = _LANGUAGE_ALIASES.get(tag, tag)
    primary = tag.split("-")[0]
    primary = _LANGUAGE_ALIASES.get(primary, primary)
    return primary if primary in _LANGUAGE_CODES else None


def has_words(text: str) -> bool:
    """False for empty or punctuation-only output ("。", "..."), which Whisper emits on noise."""
    return any(ch.isalnum() for ch in text)


def collapse_repeats(text: str) -> str:
    """Cut a decoder loop ("天天天天…", "here, here, here, …") down to one occurrence."""
    if not text or get_compression_ratio(text) <= _LOOP_COMPRESSION_RATIO:
        return text
    return _REPEAT.sub(r"\1", text).strip()


@dataclass(frozen=True)
class DecodeResult:
    text: str
    language: str
    language_probability: float
    no_speech_prob: float
    avg_logprob: float
    audio_s: float
    elapsed_s: float
    truncated: bool = False  # the token cap cut the output

    @property
    def rtf(self) -> float:
        return self.elapsed_s / self.audio_s if self.audio_s > 0 else 0.0


class WhisperDecoder:
    """Owns the Whisper model; `transcribe` blocks (CTranslate2 releases the GIL)."""

    def __init__(
        self, model_dir: Path, *, threads: int, workers: int, options: DecodeOptions
    ) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self.workers = workers
        self.options = options
        self._model: WhisperModel | None = None
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()  # guards the tokenizer cache across decode threads

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            self._model = WhisperModel(
                str(self.model_dir),
                device="cpu",
                compute_type="int8",
                cpu_threads=self.threads,
                num_workers=self.workers,
                local_files_only=True,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            raise EngineError(f"cannot load Whisper from {self.model_dir}: {exc}") from exc

    def warm_up(self) -> DecodeResult:
        """Run one decode so the first call does not pay for lazy allocations."""
        t = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
        # A gliding tone with a little noise: enough to run the encoder and a few decoder steps.
        audio = (0.1 * np.sin(2 * np.pi * (200 + 200 * t) * t)).astype(np.float32)
        audio += np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
        return self.transcribe(audio, "en", max_new_tokens=8)

    def _tokenizer(self, model: WhisperModel, language: str) -> Tokenizer:
        with self._lock:
            tokenizer = self._tokenizers.get(language)
            if tokenizer is None:
                tokenizer = Tokenizer(
                    model.hf_tokenizer,
                    model.model.is_multilingual,
                    task="transcribe",
                    language=language,
                )
                self._tokenizers[language] = tokenizer
            return tokenizer

    def transcribe(
        self,
        audio: Samples,
        language: str | None,
        *,
        max_new_tokens: int | None = None,
        min_context_s: float | None = None,
    ) -> DecodeResult:
        """Decode one utterance (its last 30 s); ``language`` None detects it.

        ``min_context_s`` overrides the options' encoder context (partials use less).
        """
        if self._model is None:
            raise EngineError("Whisper is not loaded")
        model = self._model
        started = time.monotonic()
        audio = audio[-_WINDOW_S * SAMPLE_RATE :]
        audio_s = len(audio) / SAMPLE_RATE
        cap = max_new_tokens if max_new_tokens is not None else decode_cap(audio_s, self.options)

        features = model.feature_extractor(audio)
        context_s = self.options.min_context_s if min_context_s is None else min_context_s
        frames = context_frames(features.shape[-1], context_s)
        encoded = model.encode(pad_or_trim(features, frames))

        language_probability = 1.0
        if language is None:
            token, language_probability = model.model.detect_language(encoded)[0][0]
            language = token[2:-2]  # "<|en|>" -> "en"
        tokenizer = self._tokenizer(model, language)
        prompt_text = _PROMPTS.get(language)
        previous = tokenizer.encode(" " + prompt_text) if prompt_text else []
        prompt = model.get_prompt(tokenizer, previous, without_timestamps=True)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=self.options.beam_size,
            max_length=len(prompt) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, (-1,)),
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text = collapse_repeats(tokenizer.decode(tokens).strip())
        no_speech = float(result.no_speech_prob)
        # Whisper's own rule: likely no speech *and* an unsure decode means a hallucination.
        if no_speech > self.options.no_speech_threshold and avg_logprob < _LOG_PROB_THRESHOLD:
            text = ""
        return DecodeResult(
            text=text if has_words(text) else "",
            language=language,
            language_probability=float(language_probability),
            no_speech_prob=no_speech,
            avg_logprob=float(avg_logprob),
            audio_s=audio_s,
            elapsed_s=time.monotonic() - started,
            truncated=len(tokens) >= cap,
        )
