"""A minimal client for OpenAI-compatible chat endpoints (`POST {base_url}/chat/completions`).

Standard library only: a judge sends one small request per response, from a thread pool, so
urllib is enough and adds no dependency. Rate limits (429) and server errors (5xx), timeouts
and dropped connections are retried with exponential backoff, honouring Retry-After. The API
key is sent only in the Authorization header and is scrubbed from anything the server echoes;
credentials written into the URL (`https://user:key@host/v1`) are sent as HTTP Basic auth and
shown nowhere (`url` and every message hold `[redacted]` in their place).
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any, NoReturn

from disalign.errors import UserError, redact_url_secrets

_MAX_WAIT_S = 60.0
_DETAIL_CHARS = 200


class RequestFailed(Exception):
    """A request that still failed after its retries, or whose reply was not a chat completion:
    the response it was for stays unjudged (and uncached), the rest of the batch goes on."""


class _Retryable(Exception):
    def __init__(self, description: str, wait: float | None = None, unreachable: bool = False):
        super().__init__(description)
        self.wait = wait
        self.unreachable = unreachable


@dataclass(frozen=True)
class ChatEndpoint:
    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    max_tokens: int = 1024
    temperature: float = 0.0

    @property
    def url(self) -> str:
        """The endpoint as it may be shown: credentials in it redacted."""
        return redact_url_secrets(self._endpoint_url())

    def _endpoint_url(self) -> str:
        """The endpoint requested: the base URL without its user-info part, which goes in a header."""
        parts = urllib.parse.urlsplit(self.base_url.rstrip("/"))
        base = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        # Accept the full endpoint too: it is what a server's docs often show.
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def _authorization(self) -> str | None:
        if self.api_key:
            return f"Bearer {self.api_key}"
        parts = urllib.parse.urlsplit(self.base_url)
        if parts.username is None:
            return None
        user_info = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        return "Basic " + base64.b64encode(user_info.encode()).decode()

    def complete(self, content: str) -> str:
        """The assistant's reply to one user message."""
        body = json.dumps(
            {
                "model": self.model,
                "messages": [{"role": "user", "content": content}],
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
        ).encode()
        attempt = 0
        while True:
            try:
                return self._post(body)
            except _Retryable as failure:
                if attempt == self.retries:
                    if failure.unreachable:
                        raise UserError(f"cannot reach judge endpoint {self.url} ({failure})") from None
                    raise RequestFailed(f"{failure} (after {attempt + 1} attempts)") from None
                time.sleep(self._wait(attempt, failure.wait))
                attempt += 1

    def _post(self, body: bytes) -> str:
        headers = {"Content-Type": "application/json"}
        authorization = self._authorization()
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(self._endpoint_url(), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as err:
            self._raise_for_status(err)
        except urllib.error.URLError as err:
            if isinstance(err.reason, (TimeoutError, socket.timeout)):
                raise _Retryable(f"timed out after {self.timeout:g} s") from None
            raise _Retryable(self._redact(str(err.reason)), unreachable=True) from None
        except TimeoutError:
            raise _Retryable(f"timed out after {self.timeout:g} s") from None
        except (OSError, http.client.HTTPException) as err:  # reset or dropped mid-reply
            raise _Retryable(f"connection lost ({err.__class__.__name__})") from None
        return self._content(payload)

    def _raise_for_status(self, err: urllib.error.HTTPError) -> NoReturn:
        detail = self._detail(err)
        if err.code == 429 or err.code >= 500:
            raise _Retryable(f"HTTP {err.code} {detail}".strip(), wait=_retry_after(err.headers.get("Retry-After")))
        # Any other status (401, 404, 400) is a configuration mistake that every request would repeat.
        raise UserError(f"judge endpoint {self.url} answered HTTP {err.code} {detail}".strip())

    def _detail(self, err: urllib.error.HTTPError) -> str:
        try:
            text = err.read().decode("utf-8", "replace")
        except OSError:
            return ""
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text
        return self._redact(" ".join(str(message).split()))[:_DETAIL_CHARS]

    def _content(self, payload: bytes) -> str:
        try:
            reply: Any = json.loads(payload)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            start = self._redact(payload.decode("utf-8", "replace"))[:80]
            raise RequestFailed(f"reply is not a chat completion: {start!r}") from None
        if not isinstance(content, str):
            raise RequestFailed("reply has no text content")
        return content

    def _redact(self, text: str) -> str:
        text = redact_url_secrets(text)
        password = urllib.parse.urlsplit(self.base_url).password
        for secret in filter(None, (self.api_key, password and urllib.parse.unquote(password))):
            text = text.replace(secret, "[key]")
        return text

    def _wait(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, _MAX_WAIT_S)
        # Jitter keeps a pool of workers that hit a rate limit together from retrying together.
        return min(self.backoff * 2**attempt * (1 + random.random()), _MAX_WAIT_S)


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare for APIs and falls back to backoff."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
