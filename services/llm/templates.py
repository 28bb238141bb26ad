"""Prompt templates: Jinja2 in a locked-down sandbox, with size and time limits.

A template is user input (a Bella client sends ``sys_prompt`` and ``prompt``), so it is
compiled in `ImmutableSandboxedEnvironment` and checked before it is ever rendered:

* the source is capped (`TemplateLimits.max_source_chars`);
* attributes and items whose name starts with ``_`` are refused when compiling, and any
  other unsafe attribute raises at once (the stock sandbox would print it as empty);
* every name the template reads must be known (``history_messages``, ``user_message``,
  ``variables``, the session's variables and the workers' result names): a typo is a
  clear error when the session opens, not an empty string in the prompt;
* ``*`` and ``**`` are intercepted so ``'x' * 10**9`` or ``9**9**9`` cannot allocate or
  spin, integer filter arguments (widths, counts) are capped, and the string methods
  that pad to a width are unavailable;
* rendering streams the output and stops past `TemplateLimits.max_output_chars`, and a
  per-render deadline is enforced by a trace function on the template's own frames, so
  a loop that prints nothing cannot run forever either.

Rendering is synchronous (pure CPU, bounded by the deadline); callers on an event loop
run it in a thread. A result that was never produced by a worker is simply undefined
and renders as an empty string (``| default(...)`` picks a fallback).

The triple-brace form ``{{{ expr }}}`` used by the Bella documentation's examples is
not Jinja2 syntax; it is read as ``{{ expr }}`` so those examples work verbatim.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from jinja2 import ChainableUndefined, meta, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shared.errors import ProtocolError
from shared.messages import ChatMessage

HISTORY = "history_messages"
USER_MESSAGE = "user_message"
VARIABLES = "variables"
RESERVED_NAMES = frozenset({HISTORY, USER_MESSAGE, VARIABLES})

_TRIPLE_BRACES = re.compile(r"\{\{\{(.*?)\}\}\}", re.DOTALL)
_MAX_INT_ARGUMENT = 10_000  # widths and counts a filter may be given
_MAX_POWER_EXPONENT = 64
# Width or precision of four digits and more in a printf-style format.
_WIDE_PRINTF = re.compile(r"%[-+ #0]*(\*|\d{4,})|%[-+ #0]*\d*\.(\*|\d{4,})")
# String methods that pad to a caller-given width, and the formatters that can.
_WIDTH_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "format", "format_map"}
)


class PromptTemplateError(ProtocolError):
    """A template that cannot be used: syntax, unknown name, unsafe access or a limit."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"template {name}: {reason}")
        self.template_name = name
        self.reason = reason


@dataclass(frozen=True)
class TemplateLimits:
    max_source_chars: int = 32_000
    max_output_chars: int = 64_000
    render_timeout_s: float = 0.5


class _RenderDeadlineError(Exception):
    """Raised inside a template's frames by the trace function."""


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, max_output_chars: int) -> None:
        super().__init__(undefined=ChainableUndefined, autoescape=False, keep_trailing_newline=True)
        self._max_chars = max_output_chars
        self.filters = {
            name: _capped_filter(f, max_output_chars) for name, f in self.filters.items()
        }
        self.filters["format"] = _capped_filter(_safe_printf, max_output_chars)
        lipsum: Callable[..., Any] = self.globals["lipsum"]  # type: ignore[assignment]
        self.globals["lipsum"] = _capped_filter(lipsum, max_output_chars)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > _MAX_POWER_EXPONENT:
                raise SecurityError(f"exponent {right} is above {_MAX_POWER_EXPONENT}")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > self._max_chars:
                    raise SecurityError(f"repetition of {count} items is above {self._max_chars}")
        return super().call_binop(context, operator, left, right)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, str) and attr in _WIDTH_METHODS:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def wrap_str_format(self, value: Any) -> Any:
        # str.format can pad to any width ("{:99999999}"); templates have filters instead.
        if getattr(value, "__name__", None) in ("format", "format_map") and isinstance(
            getattr(value, "__self__", None), str
        ):
            raise SecurityError("str.format is not available in templates")
        return None

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that prints as "": refuse instead, so a
        # probe of Python internals is an error the client sees.
        raise SecurityError(
            f"access to attribute {attribute!r} of a {type(obj).__name__} is not allowed"
        )


def _safe_printf(value: Any, *args: Any, **kwargs: Any) -> str:
    text = str(value)
    if _WIDE_PRINTF.search(text):
        raise SecurityError("format widths of more than three digits are not allowed")
    if args and kwargs:
        raise SecurityError("format takes positional or keyword arguments, not both")
    return text % (kwargs or args)


def _capped_filter(func: Callable[..., Any], max_chars: int) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps jinja's pass_context / pass_environment marks
    def capped(*args: Any, **kwargs: Any) -> Any:
        for arg in (*args, *kwargs.values()):
            if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > _MAX_INT_ARGUMENT:
                raise SecurityError(f"filter argument {arg} is above {_MAX_INT_ARGUMENT}")
        result = func(*args, **kwargs)
        if isinstance(result, str | list) and len(result) > max_chars:
            raise SecurityError(f"filter result of {len(result)} items is above {max_chars}")
        return result

    return capped


@functools.cache
def _sandbox(max_output_chars: int) -> _Sandbox:
    return _Sandbox(max_output_chars)


def _unsafe_names(tree: nodes.Template) -> list[str]:
    found: list[str] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name = node.attr
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            name = node.arg.value
        else:
            continue
        if name.startswith("_"):
            found.append(name)
    return found


class PromptTemplate:
    """One compiled template; `render` is thread-safe."""

    def __init__(self, name: str, source: str, limits: TemplateLimits, known: Collection[str]):
        self.name = name
        self.source = source
        self._limits = limits
        if len(source) > limits.max_source_chars:
            raise PromptTemplateError(
                name, f"{len(source)} characters, more than the {limits.max_source_chars} allowed"
            )
        env = _sandbox(limits.max_output_chars)
        text = _TRIPLE_BRACES.sub(r"{{\1}}", source)
        try:
            tree = env.parse(text)
        except TemplateSyntaxError as exc:
            raise PromptTemplateError(
                name, f"syntax error on line {exc.lineno}: {exc.message}"
            ) from exc
        unsafe = _unsafe_names(tree)
        if unsafe:
            raise PromptTemplateError(name, f"access to {unsafe[0]!r} is not allowed")
        unknown = sorted(meta.find_undeclared_variables(tree) - set(known) - set(env.globals))
        if unknown:
            raise PromptTemplateError(
                name,
                f"unknown variable {', '.join(unknown)}; known: {', '.join(sorted(known))}",
            )
        try:
            self._template = env.from_string(tree)
        except JinjaTemplateError as exc:
            raise PromptTemplateError(name, exc.message or type(exc).__name__) from exc

    def render(self, context: Mapping[str, Any]) -> str:
        """The rendered text; `PromptTemplateError` for any failure or exceeded limit."""
        limit = self._limits.max_output_chars
        deadline = time.monotonic() + self._limits.render_timeout_s
        code_file = "<template>"

        def in_template(frame: FrameType, event: str, arg: Any) -> Any:
            if time.monotonic() > deadline:
                raise _RenderDeadlineError
            return in_template

        def on_call(frame: FrameType, event: str, arg: Any) -> Any:
            if time.monotonic() > deadline:
                raise _RenderDeadlineError
            return in_template if frame.f_code.co_filename == code_file else None

        parts: list[str] = []
        size = 0
        previous = sys.gettrace()
        sys.settrace(on_call)
        try:
            for part in self._template.generate(dict(context)):
                size += len(part)
                if size > limit:
                    raise PromptTemplateError(self.name, f"output longer than {limit} characters")
                parts.append(part)
        except _RenderDeadlineError:
            raise PromptTemplateError(
                self.name, f"rendering took longer than {self._limits.render_timeout_s} s"
            ) from None
        except SecurityError as exc:
            raise PromptTemplateError(self.name, f"refused: {exc}") from exc
        except JinjaTemplateError as exc:
            raise PromptTemplateError(self.name, exc.message or type(exc).__name__) from exc
        except RecursionError as exc:
            raise PromptTemplateError(self.name, "recursion too deep") from exc
        except PromptTemplateError:
            raise
        except Exception as exc:  # any failure inside the template is the template's
            raise PromptTemplateError(self.name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            sys.settrace(previous)
        return "".join(parts)


def template_context(
    history: Sequence[ChatMessage], user_message: str, variables: Mapping[str, Any]
) -> dict[str, Any]:
    """What a template sees: the reserved names plus each variable under its own name."""
    context: dict[str, Any] = dict(variables)
    context[HISTORY] = [{"role": m.role, "content": m.content} for m in history]
    context[USER_MESSAGE] = user_message
    context[VARIABLES] = dict(variables)
    return context
