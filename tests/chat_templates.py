"""Chat templates written after those of well-known instruction models (their layout and whitespace control;
tool-call branches shortened), with the special tokens each needs, for the Ollama Modelfile tests."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

MISTRAL_V03 = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] " }}{{- tools | tojson }}{{- "[/AVAILABLE_TOOLS]" }}
        {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""  # noqa: E501

GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {{- '\\n<tool_call>\\n' }}{{- tool_call.function | tojson }}{{- '\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {{- '<|im_start|>user\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response><|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""  # noqa: E501

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# Not expressible: the text before an answer counts the turns, which no fixed gap between messages can.
NUMBERED_TURNS = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'Question ' + loop.index|string + ': ' + "
    "message['content'] + '\\n' }}{% elif message['role'] == 'assistant' %}{{ 'Answer: ' + message['content'] + "
    "'<|im_end|>\\n' }}{% else %}{{ message['content'] + '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer: ' }}{% endif %}"
)


@dataclass
class Family:
    """A chat template and the tokenizer details that go with it."""

    template: str | None  # None: the embedded SmolLM2 tokenizer's own (ChatML with a default system prompt)
    bos: str | None = None
    eos: str | None = None
    adds_bos: bool = False
    specials: list[str] = field(default_factory=list)
    end_of_turn: str = ""  # the token the template ends an answer with
    trims: bool = False  # the template strips whitespace around message contents


FAMILIES = {
    "smollm2": Family(None, end_of_turn="<|im_end|>"),
    "llama3": Family(LLAMA3, "<|begin_of_text|>", "<|end_of_text|>", True,
                     ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>", trims=True),
    "mistral": Family(MISTRAL_V03, "<s>", "</s>", True, ["[INST]", "[/INST]"], "</s>", trims=True),
    "gemma3": Family(GEMMA3, "<bos>", "<eos>", True, ["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>",
                     trims=True),
    "phi3": Family(PHI3, "<s>", "<|endoftext|>", False, ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"],
                   "<|end|>"),
    "qwen2.5": Family(QWEN25, None, "<|im_end|>", False, [], "<|im_end|>"),
    "llama2": Family(LLAMA2, "<s>", "</s>", True, ["[INST]", "[/INST]"], "</s>", trims=True),
}  # fmt: skip


def family_tokenizer(base: Any, family: Family) -> Any:
    """A copy of ``base`` with the family's chat template, special tokens, BOS/EOS and BOS-adding."""
    tok = copy.deepcopy(base)
    if family.template is None:
        return tok
    tok.add_special_tokens({"additional_special_tokens": family.specials})
    if family.bos is not None:
        tok.add_special_tokens({"bos_token": family.bos})
    else:
        tok.bos_token = None
    if family.eos is not None:
        tok.add_special_tokens({"eos_token": family.eos})
    tok.add_bos_token = family.adds_bos
    tok.chat_template = family.template
    return tok


# Not a model's template: turn text that Go's template language or the Modelfile parser would misread if
# written as it is ("{{", a "{" right before an action, a line ending in three quotes, a carriage return,
# a no-break space).
ODD_LITERALS = (
    "{% for message in messages %}{{ '«' + message['role'] + '» {{\u00a0\"\"\"\\n{' + message['content'] + '}\\r\\n' }}"
    '{% endfor %}{% if add_generation_prompt %}{{ \'«assistant» {{\u00a0"""\\n{\' }}{% endif %}'
)
