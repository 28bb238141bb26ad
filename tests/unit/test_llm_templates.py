"""Prompt templates: the Bella rewrite example, the sandbox, the limits, clear errors."""

from __future__ import annotations

import json

import pytest

from services.llm.templates import (
    RESERVED_NAMES,
    PromptTemplate,
    PromptTemplateError,
    TemplateLimits,
    template_context,
)
from shared.messages import ChatMessage

LIMITS = TemplateLimits(max_output_chars=10_000, render_timeout_s=0.3)

# The rewrite_user_message worker's prompt of the Bella documentation, as JSON text.
SEED_REWRITE_PROMPT = json.loads(
    r""""## 用户历史对话\n<history_messages>\n{% for message in history_messages %}\n"""
    r"""{% if message.role == \"user\" %}\n <user timestamp=\"{{loop.index}}\">"""
    r"""{{{ message.content }}}</user>\n{% elif message.role == \"assistant\" %}\n"""
    r""" <agent timestamp=\"{{loop.index}}\">{{{ message.content }}}</agent>\n{% endif %}\n"""
    r"""{% endfor %}\n\n</history_messages>\n\n## 用户最新消息\n<user_message>\n"""
    r''' {{user_message}}\n</user_message>\n\n请进行消息改写吧!\n"'''
)


def render(source: str, *, variables: dict[str, object] | None = None, user: str = "hi") -> str:
    names = RESERVED_NAMES | set(variables or {})
    template = PromptTemplate("t", source, LIMITS, names)
    return template.render(template_context([], user, variables or {}))


def refused(source: str, *, variables: dict[str, object] | None = None) -> str:
    with pytest.raises(PromptTemplateError) as info:
        render(source, variables=variables)
    return str(info.value)


def test_seed_rewrite_prompt_renders_verbatim() -> None:
    template = PromptTemplate("rewrite", SEED_REWRITE_PROMPT, LIMITS, RESERVED_NAMES)
    history = [
        ChatMessage(role="user", content="北京天气怎么样"),
        ChatMessage(role="assistant", content="北京今天晴"),
    ]
    text = template.render(template_context(history, "那上海呢", {}))
    assert '<user timestamp="1">北京天气怎么样</user>' in text
    assert '<agent timestamp="2">北京今天晴</agent>' in text
    assert "<user_message>\n 那上海呢\n</user_message>" in text
    assert "{" not in text


def test_variables_by_name_and_in_the_mapping() -> None:
    out = render(
        "{{ city }}/{{ variables.city }}/{{ variables['city'] }}", variables={"city": "Oslo"}
    )
    assert out == "Oslo/Oslo/Oslo"


def test_missing_worker_result_renders_empty_or_default() -> None:
    names = RESERVED_NAMES | {"intent"}
    template = PromptTemplate(
        "t", "[{{ intent.name }}|{{ intent | default('none') }}]", LIMITS, names
    )
    assert template.render(template_context([], "hi", {})) == "[|none]"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ user_message['__class__'] }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ (user_message|attr('upper')).__self__ }}",
    ],
)
def test_python_internals_are_refused_at_compile(source: str) -> None:
    with pytest.raises(PromptTemplateError, match="is not allowed"):
        PromptTemplate("t", source, LIMITS, RESERVED_NAMES)


def test_dynamic_attribute_probe_is_refused_at_render() -> None:
    assert "not allowed" in refused("{{ user_message|attr('__class__') }}")


def test_unknown_variable_is_refused_with_the_known_names() -> None:
    message = refused("Hello {{ nmae }}", variables={"name": "Ann"})
    assert "unknown variable nmae" in message and "name" in message


def test_syntax_error_names_the_line() -> None:
    assert "syntax error on line 2" in refused("ok\n{% if %}")


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro f(n) %}{% for i in range(1000) %}{% endfor %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    ],
)
def test_runaway_rendering_is_stopped(source: str) -> None:
    message = refused(source)
    assert "longer than" in message or "recursion" in message


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{% for i in range(5000) %}xxxxx{% endfor %}", "output longer than"),
        ("{{ 'x' * 10000000 }}", "repetition"),
        ("{{ 2 ** 100000 }}", "exponent"),
        ("{{ 'a'|center(100000000) }}", "filter argument"),
        ("{{ '%099999999d'|format(1) }}", "format widths"),
        ("{{ '{:99999999}'.format(1) }}", "str.format"),
    ],
)
def test_size_limits(source: str, reason: str) -> None:
    assert reason in refused(source)


def test_source_size_limit() -> None:
    with pytest.raises(PromptTemplateError, match="more than the 100 allowed"):
        PromptTemplate("t", "x" * 101, TemplateLimits(max_source_chars=100), RESERVED_NAMES)


def test_runtime_errors_are_template_errors() -> None:
    assert "ZeroDivisionError" in refused("{{ 1 / 0 }}")
