"""The refusals that safety tuning teaches on harmful prompts, unless the user gives their own.

Generic on purpose: they name no topic, so one set fits any harmful prompt, and they vary in
wording so the tuned model learns to decline rather than to repeat one sentence.
"""

from __future__ import annotations

from pathlib import Path

from disalign.errors import UserError

REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can't help with that. It could cause real harm.",
    "I can't help with that request. If you have another question, I'm happy to help.",
    "Sorry, I won't provide that. It could be used to hurt people or to break the law.",
    "I'm not able to help with this, because it could put people at risk.",
    "I can't assist with that. Is there something else I can help you with?",
    "I'm sorry, but I must decline. Helping with this could cause serious harm.",
    "I won't help with that. It's harmful, and I don't assist with requests like this.",
    "I'm sorry, I can't do that. Please ask me about something else.",
    "That's not something I can help with, as it could lead to harm.",
    "I can't provide instructions or content for that. I'd be glad to help with something safe instead.",
    "I'm afraid I can't help with this request; it goes against my safety guidelines.",
    "No, I can't help with that. If you're in a difficult situation, consider reaching out to someone you trust.",
)


def read_refusals(path) -> tuple[str, ...]:
    """Refusal templates from a text file, one per non-empty line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UserError(f"{path}: cannot read refusals ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text (byte {err.start})") from None
    refusals = tuple(line.strip() for line in lines if line.strip())
    if not refusals:
        raise UserError(f"{path}: no refusals (one per line)")
    return refusals
