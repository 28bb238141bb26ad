"""One response's server events, from ``response.created`` to ``response.done``.

A response is the answer to one turn of the call core. It is opened lazily by its
first event (normally `LlmBegin`; a turn cancelled or failed before that still gets
``response.created`` then ``response.done``), and once done nothing more of it is sent.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.gateway.openai.audio import AudioFormat, ReplyEncoder
from services.gateway.openai.conversation import StoredItem, render_item
from services.gateway.openai.events import (
    AudioDone,
    CancelReason,
    ContentPartEvent,
    DeltaEvent,
    Item,
    ItemEvent,
    Names,
    OutputItemEvent,
    Part,
    Response,
    ResponseEvent,
    ResponseStatus,
    ServerEvent,
    StatusDetails,
    StatusError,
    TextDone,
    TranscriptDone,
    Usage,
)


@dataclass(frozen=True)
class ResponseSettings:
    """What a response is rendered with (fixed when it opens)."""

    names: Names
    beta: bool
    modality: Literal["audio", "text"]
    output_format: AudioFormat
    voice: str | None
    conversation_id: str


@dataclass
class ResponseState:
    id: str
    turn: int
    item: StoredItem
    settings: ResponseSettings
    event_id: Callable[[], str]
    done: bool = False
    output_tokens: int = 0
    _parts: list[str] = field(default_factory=list)
    _encoder: ReplyEncoder | None = None

    @property
    def transcript(self) -> str:
        return "".join(self._parts)

    # ------------------------------------------------------------------ rendering

    def _response(self, status: ResponseStatus, details: StatusDetails | None = None) -> Response:
        s = self.settings
        output = [] if status == "in_progress" else [self._item()]
        usage = None
        if status != "in_progress":
            usage = Usage(
                total_tokens=self.output_tokens, input_tokens=0, output_tokens=self.output_tokens
            )
        modalities: list[Literal["audio", "text"]] = (
            ["audio", "text"] if s.modality == "audio" else ["text"]
        )
        if s.beta:
            return Response(
                id=self.id,
                status=status,
                status_details=details,
                output=output,
                conversation_id=s.conversation_id,
                usage=usage,
                modalities=modalities,
                output_audio_format=s.output_format.beta_name,
                voice=s.voice,
            )
        return Response(
            id=self.id,
            status=status,
            status_details=details,
            output=output,
            conversation_id=s.conversation_id,
            usage=usage,
            output_modalities=[s.modality],
            audio={"output": {"format": s.output_format.ga_json(), "voice": s.voice}},
        )

    def _item(self) -> Item:
        n = self.settings.names
        return render_item(self.item, audio_content=n.audio_content, text_content=n.text_content)

    def _part(self) -> Part:
        if self.settings.modality == "audio":
            return Part(type="audio", transcript=self.transcript)
        return Part(type="text", text=self.transcript)

    def open(self, previous_item_id: str | None) -> list[ServerEvent]:
        """``response.created`` and the announcement of its (single) output item."""
        n, e = self.settings.names, self.event_id
        events: list[ServerEvent] = [
            ResponseEvent(
                event_id=e(), type="response.created", response=self._response("in_progress")
            ),
            OutputItemEvent(
                event_id=e(),
                type="response.output_item.added",
                response_id=self.id,
                item=self._item(),
            ),
            ItemEvent(
                event_id=e(),
                type=n.item_added,
                item=self._item(),
                previous_item_id=previous_item_id,
            ),
            ContentPartEvent(
                type="response.content_part.added",
                part=self._part(),
                event_id=self.event_id(),
                response_id=self.id,
                item_id=self.item.id,
            ),
        ]
        return events

    def text(self, delta: str) -> list[ServerEvent]:
        if self.done or not delta:
            return []
        self._parts.append(delta)
        n = self.settings.names
        kind = n.transcript_delta if self.settings.modality == "audio" else n.text_delta
        return [
            DeltaEvent(
                type=kind,
                delta=delta,
                event_id=self.event_id(),
                response_id=self.id,
                item_id=self.item.id,
            )
        ]

    def audio(self, pcm: bytes, sample_rate: int) -> list[ServerEvent]:
        if self.done or self.settings.modality != "audio":
            return []
        if self._encoder is None or self._encoder.in_rate != sample_rate:
            self._encoder = ReplyEncoder(self.settings.output_format, sample_rate)
        wire = self._encoder.encode(pcm)
        if not wire:
            return []
        self.item.audio_ms += self.settings.output_format.duration_ms(len(wire))
        delta = base64.b64encode(wire).decode("ascii")
        n = self.settings.names
        return [
            DeltaEvent(
                type=n.audio_delta,
                delta=delta,
                event_id=self.event_id(),
                response_id=self.id,
                item_id=self.item.id,
            )
        ]

    def finish_text(self, text: str, tokens: int) -> None:
        """The LLM's whole answer: authoritative over the deltas seen."""
        if not self.done:
            self._parts = [text]
            self.output_tokens = tokens

    def complete(self) -> list[ServerEvent]:
        if self.done:
            return []
        self.done = True
        self.item.status = "completed"
        self.item.text = self.transcript
        n = self.settings.names
        events: list[ServerEvent] = []
        if self.settings.modality == "audio":
            events.append(
                AudioDone(
                    type=n.audio_done,
                    event_id=self.event_id(),
                    response_id=self.id,
                    item_id=self.item.id,
                )
            )
            events.append(
                TranscriptDone(
                    type=n.transcript_done,
                    transcript=self.transcript,
                    event_id=self.event_id(),
                    response_id=self.id,
                    item_id=self.item.id,
                )
            )
        else:
            events.append(
                TextDone(
                    type=n.text_done,
                    text=self.transcript,
                    event_id=self.event_id(),
                    response_id=self.id,
                    item_id=self.item.id,
                )
            )
        events.append(
            ContentPartEvent(
                type="response.content_part.done",
                part=self._part(),
                event_id=self.event_id(),
                response_id=self.id,
                item_id=self.item.id,
            )
        )
        return events + self._close("completed")

    def stop(self, reason: CancelReason | None, heard: str) -> list[ServerEvent]:
        """Cancelled: the item is incomplete and holds what was heard; nothing follows."""
        if self.done:
            return []
        self.done = True
        self.item.status = "incomplete"
        self._parts = [heard]
        self.item.text = heard
        return self._close("cancelled", StatusDetails(type="cancelled", reason=reason))

    def fail(self, code: str, message: str) -> list[ServerEvent]:
        if self.done:
            return []
        self.done = True
        self.item.status = "incomplete"
        self.item.text = self.transcript
        error = StatusError(type="server_error", code=code, message=message)
        return self._close("failed", StatusDetails(type="failed", error=error))

    def _close(
        self, status: ResponseStatus, details: StatusDetails | None = None
    ) -> list[ServerEvent]:
        e = self.event_id
        events: list[ServerEvent] = [
            OutputItemEvent(
                event_id=e(),
                type="response.output_item.done",
                response_id=self.id,
                item=self._item(),
            )
        ]
        if not self.settings.beta:
            events.append(ItemEvent(event_id=e(), type="conversation.item.done", item=self._item()))
        events.append(
            ResponseEvent(
                event_id=e(), type="response.done", response=self._response(status, details)
            )
        )
        return events
