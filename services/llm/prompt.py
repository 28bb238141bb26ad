"""Prompt assembly and history capping: pure functions, no I/O, no clock.

A turn's prompt is ``system + capped history + user``. The history keeps at most
``max_history`` messages, dropping the oldest first, and always starts with a user
message so the model never sees an answer without its question. On top of the
message cap, the oldest messages are dropped while the prompt would not fit the
session's context (a cheap token estimate, erring on the large side).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence

from shared.messages import ChatMessage, HistoryOp

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant on a live call. Everything you write is read "
    "aloud by a speech synthesizer, so answer in one to three short, natural spoken "
    "sentences. Never use markdown, lists, headings, code, emojis or special symbols. "
    "Always answer in the language the user speaks."
)

# Chat-template tokens around every message (Qwen: "<|im_start|>role\n ... <|im_end|>\n").
_MESSAGE_OVERHEAD_TOKENS = 5
# English BPE averages ~4 characters a token; 3 keeps the estimate on the safe side.
_LATIN_CHARS_PER_TOKEN = 3


def effective_system_prompt(system_prompt: str) -> str:
    """The session's persona, or the voice-assistant default when none was given."""
    return system_prompt.strip() or DEFAULT_SYSTEM_PROMPT


def _is_wide(char: str) -> bool:
    # CJK ideographs, kana, hangul and full-width forms cost about a token each.
    return unicodedata.east_asian_width(char) in ("W", "F")


def estimate_tokens(text: str) -> int:
    """An upper-leaning estimate of ``text``'s token count, without a tokenizer."""
    wide = sum(1 for c in text if _is_wide(c))
    narrow = len(text) - wide
    return wide + math.ceil(narrow / _LATIN_CHARS_PER_TOKEN)


def _message_tokens(message: ChatMessage) -> int:
    return estimate_tokens(message.content) + _MESSAGE_OVERHEAD_TOKENS


def conversation_only(history: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    """User and assistant messages only: the session's own system prompt leads the prompt."""
    return tuple(m for m in history if m.role != "system")


def _drop_to_user_start(history: Sequence[ChatMessage]) -> tuple[ChatMessage, ...]:
    start = 0
    while start < len(history) and history[start].role != "user":
        start += 1
    return tuple(history[start:])


def cap_history(history: Sequence[ChatMessage], max_messages: int) -> tuple[ChatMessage, ...]:
    """The newest ``max_messages`` messages, starting at a user message."""
    if max_messages <= 0:
        return ()
    return _drop_to_user_start(history[-max_messages:])


def grow_history(history: Sequence[ChatMessage], max_messages: int) -> tuple[ChatMessage, ...]:
    """``history`` after messages were added: capped with hysteresis.

    A sliding window that drops the oldest exchange on every turn changes the start of
    the prompt every turn, and the engine's prompt cache (which reuses the longest common
    prefix) then re-evaluates the whole history each time: time to first token grows with
    the history. Over the cap we cut a quarter more, so the prefix stays put for several
    turns. The history never exceeds ``max_messages``.
    """
    if len(history) <= max_messages:
        return tuple(history)
    return cap_history(history, max_messages - max_messages // 4)


def fit_history(
    system: str, history: Sequence[ChatMessage], user: str | None, budget_tokens: int
) -> tuple[ChatMessage, ...]:
    """Drop the oldest messages until system + history + user fit ``budget_tokens``.

    The system prompt and the new user message are never dropped: if they alone do not
    fit, the engine reports the overflow and the turn fails with a clear error.
    """
    fixed = estimate_tokens(system) + _MESSAGE_OVERHEAD_TOKENS
    if user is not None:
        fixed += estimate_tokens(user) + _MESSAGE_OVERHEAD_TOKENS
    kept = tuple(history)
    costs = [_message_tokens(m) for m in kept]
    total = fixed + sum(costs)
    start = 0
    while start < len(kept) and total > budget_tokens:
        total -= costs[start]
        start += 1
        # Never leave an answer whose question was dropped.
        while start < len(kept) and kept[start].role != "user":
            total -= costs[start]
            start += 1
    return kept[start:]


def build_messages(
    system_prompt: str,
    history: Sequence[ChatMessage],
    user: str | None,
    *,
    max_history: int,
    budget_tokens: int,
) -> list[dict[str, str]]:
    """The chat-completions ``messages`` for one turn (``user=None``: the prefill prompt).

    The result for a prefill is a prefix of the next turn's result, which is what lets
    the engine reuse the evaluated system prompt (and history) from its cache.
    """
    system = effective_system_prompt(system_prompt)
    kept = fit_history(system, cap_history(history, max_history), user, budget_tokens)
    messages = [{"role": "system", "content": system}]
    messages.extend({"role": m.role, "content": m.content} for m in kept)
    if user is not None:
        messages.append({"role": "user", "content": user})
    return messages


def continue_answer(messages: list[dict[str, str]], resume: str) -> list[dict[str, str]]:
    """``messages`` ending with the answer's start ``resume``, which the model continues.

    llama.cpp's chat completion continues a final assistant message instead of starting
    a new one (failover: the client already has that much of the answer).
    """
    if not resume:
        return messages
    return [*messages, {"role": "assistant", "content": resume}]


def record_turn(
    history: Sequence[ChatMessage],
    user: str | None,
    answer: str | None,
    max_history: int,
    *,
    user_item_id: str = "",
    assistant_item_id: str = "",
) -> tuple[ChatMessage, ...]:
    """History after a turn: the user's words, then the answer when there is one.

    ``user=None`` is a turn that answered the history as it stood (nothing to add).
    ``answer=None`` is a turn whose answer was cancelled or failed: what the user said
    stays, the partial answer (never fully heard) does not.
    """
    added = []
    if user is not None:
        added.append(ChatMessage(role="user", content=user, item_id=user_item_id))
    if answer:
        added.append(ChatMessage(role="assistant", content=answer, item_id=assistant_item_id))
    return grow_history((*history, *added), max_history)


def apply_edit(
    history: Sequence[ChatMessage],
    op: HistoryOp,
    *,
    item_id: str = "",
    content: str = "",
    message: ChatMessage | None = None,
    max_history: int,
) -> tuple[tuple[ChatMessage, ...], bool]:
    """History after one edit, and whether the edit found its entry.

    A truncation to ``""`` removes the entry: an answer nobody heard was never said.
    An edit of an unknown id changes nothing (the entry may already be capped away).
    """
    match op:
        case HistoryOp.APPEND:
            if message is None:
                return tuple(history), False
            return grow_history((*history, message), max_history), True
        case HistoryOp.TRUNCATE | HistoryOp.DELETE:
            if not item_id or all(m.item_id != item_id for m in history):
                return tuple(history), False
            edited: list[ChatMessage] = []
            for m in history:
                if m.item_id != item_id:
                    edited.append(m)
                elif op is HistoryOp.TRUNCATE and content:
                    edited.append(m.model_copy(update={"content": content}))
            return tuple(edited), True
    return tuple(history), False


def chat_request(
    messages: list[dict[str, str]],
    *,
    max_tokens: int,
    temperature: float,
    slot: int | None,
    model: str | None = None,
) -> dict[str, object]:
    """The streamed chat-completions request for the engine.

    ``id_slot`` pins the session to its own KV cache so the prefix evaluated on the
    previous turn (or by the prefill) is reused; ``-1`` lets the engine pick a slot.
    ``model`` (the engine routes on it) is left out when the session named none.
    """
    request: dict[str, object] = {
        "messages": messages,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "cache_prompt": True,
        "id_slot": -1 if slot is None else slot,
    }
    if model is not None:
        request["model"] = model
    return request
