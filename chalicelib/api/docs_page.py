"""The human-readable contract at ``GET /api/v1/docs``: one self-contained HTML page written from the
OpenAPI document (no script, no stylesheet or font from elsewhere), so it works in an ops network
that reaches nothing but the API, and it can never say something the document does not."""

from __future__ import annotations

import json
from html import escape
from typing import Any

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; padding: 0 1rem; color: #1a1a1a; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 2px solid #ddd; margin-top: 2.5rem; text-transform: capitalize; }
.op { border: 1px solid #ddd; border-radius: 6px; margin: 1rem 0; padding: .6rem 1rem; }
.method { display: inline-block; min-width: 4.5rem; font-weight: 700; font-family: monospace; }
.path { font-family: monospace; font-size: 1.05em; }
table { border-collapse: collapse; margin: .4rem 0; }
td, th { border: 1px solid #e3e3e3; padding: .2rem .5rem; text-align: left; vertical-align: top; }
code, pre { background: #f5f5f5; border-radius: 3px; padding: 0 .2rem; } pre { padding: .5rem; overflow-x: auto; }
details { margin: .3rem 0; }
"""


def _text(value: str) -> str:
    """Docs text with its `code` spans; everything else escaped."""
    parts = escape(value).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts)).replace(
        "\n\n", "<br><br>"
    )


def _ref_name(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    if schema.get("type") == "array":
        return f"array of {_ref_name(schema['items'])}"
    if "anyOf" in schema:
        return " or ".join(_ref_name(s) for s in schema["anyOf"])
    return escape(schema.get("type", "any"))


def _operation(method: str, path: str, op: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td><code>{escape(json.dumps(p['schema']))}</code></td><td>{_text(p.get('description', ''))}</td></tr>"
        for p in op.get("parameters", [])
    )
    params = f"<table><tr><th>parameter</th><th>in</th><th>schema</th><th></th></tr>{rows}</table>" if rows else ""
    body = ""
    if "requestBody" in op:
        (media,) = op["requestBody"]["content"].values()
        required = "required" if op["requestBody"].get("required") else "optional"
        body = f"<p>Body ({required}): {_ref_name(media['schema'])}</p>"
    answers = "".join(
        f"<tr><td>{escape(status)}</td><td>{_text(answer['description'])}</td>"
        f"<td>{' '.join(_ref_name(m['schema']) for m in answer.get('content', {}).values())}</td></tr>"
        for status, answer in op["responses"].items()
    )
    return (
        f'<div class="op" id="{escape(op["operationId"])}"><span class="method">{escape(method.upper())}</span>'
        f'<span class="path">{escape(path)}</span><p><b>{escape(op["summary"])}</b></p>'
        f"<p>{_text(op.get('description', ''))}</p>{params}{body}"
        f"<table><tr><th>status</th><th>meaning</th><th>body</th></tr>{answers}</table></div>"
    )


def render(document: dict[str, Any]) -> str:
    info = document["info"]
    by_tag: dict[str, list[str]] = {tag["name"]: [] for tag in document.get("tags", [])}
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append(_operation(method, path, op))
    sections = "".join(f"<h2>{escape(tag)}</h2>{''.join(ops)}" for tag, ops in by_tag.items() if ops)
    schemas = "".join(
        f'<details id="schema-{escape(name)}"><summary><code>{escape(name)}</code></summary>'
        f"<pre>{escape(json.dumps(schema, indent=2, ensure_ascii=False))}</pre></details>"
        for name, schema in sorted(document["components"]["schemas"].items())
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(info['title'])}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(info['title'])}</h1><p>Version {escape(info['version'])} · "
        '<a href="openapi.json">openapi.json</a></p>'
        f"<p>{_text(info['description'])}</p>"
        "<p>Authenticate with <code>Authorization: Bearer &lt;token&gt;</code> from "
        "<code>POST /api/v1/auth/token</code>.</p>"
        f"{sections}<h2>schemas</h2>{schemas}</body></html>"
    )
