"""The fingerprint of a first prompt: what stays the same from one run of a job to the next.

A recurring job's prompt differs between runs only in what the scheduler or a template fills
in: dates and times, numbers, ids and hashes, paths and URLs. Those become placeholders,
case and spacing are folded, and the result, with the session's cwd, is hashed.
"""

from __future__ import annotations

import re

from tokentop.sources.base import short_hash

SHOWN_CHARS = 120
"""How much of the normalised prompt a summary keeps to name the job."""
_RULES = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://\S+"), "<url>"),
    (re.compile(r"(?<![\w<])(?:[a-z]:\\|~?/|\.{1,2}/)[^\s\"'`<>]*"), "<path>"),
    (re.compile(r"\b[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}\b"), "<id>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[t ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:z|[+-]\d{2}:?\d{2})?)?"
        ),
        "<date>",
    ),
    (re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"), "<date>"),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[ap]m)?\b"), "<time>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,64}\b"), "<hash>"),
    (re.compile(r"[#$]?\b\d+(?:[.,]\d+)*%?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalised(prompt: str) -> str:
    """The prompt with its run-to-run variables replaced: `Fix issue #412 from 2026-11-20`
    and `fix issue #97 from 2026-11-27` both read `fix issue <n> from <date>`."""
    text = prompt.lower()
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return text.strip()


def prompt_key(cwd: str, prompt: str) -> str:
    """The job key of a session: its cwd and normalised first prompt, hashed ("" without a
    prompt: such a session belongs to no job by prompt)."""
    return key_of(cwd, normalised(prompt))


def key_of(cwd: str, text: str) -> str:
    """`prompt_key` of a prompt already normalised."""
    return short_hash(f"{cwd}\0{text}".encode("utf-8", "surrogatepass")) if text else ""
