"""tokenkeeper client for Open WebUI's MCP tool servers (docs/open-webui.md).

Requirements (requirements.txt): aiohttp, yarl, and botocore for SigV4. Configuration:

  TOKENKEEPER_URL      the API: https://<apiId>.execute-api.<region>.amazonaws.com, or the local
                       stack, http://127.0.0.1:8787
  TOKENKEEPER_API_KEY  local stack only: its bearer key (.data/api-key). When set, requests carry
                       "Authorization: Bearer <key>" instead of a SigV4 signature.
  AWS_REGION           SigV4 region (default us-east-1); credentials come from botocore's chain.
"""

import asyncio
import json
import os
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

FORBIDDEN_IN_ID = set("/?#%\\")


class TokenUnavailable(Exception):
    """503: the provider is failing transiently. The session is kept; try again later."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(f"{message} (retry after {retry_after}s)")
        self.retry_after = retry_after


def _base_url() -> str:
    return os.environ["TOKENKEEPER_URL"].rstrip("/")


def _auth_headers(method: str, url: str, body: str | None = None) -> dict:
    api_key = os.environ.get("TOKENKEEPER_API_KEY")
    if api_key:
        return {"Authorization": f"Bearer {api_key}"}
    # Deployed: SigV4 for execute-api, signed per attempt (X-Amz-Date).
    import botocore.session
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = botocore.session.get_session().get_credentials()
    request = AWSRequest(method=method, url=url, data=body)
    region = os.environ.get("AWS_REGION", "us-east-1")
    SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
    return dict(request.headers)


def _segment(name: str, value: str) -> str:
    """One id, percent-encoded once (API Gateway decodes the path once before tokenkeeper sees it)."""
    if not value or value in (".", "..") or any(c in FORBIDDEN_IN_ID or ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise ValueError(f"{name} must not contain / ? # % \\ or control characters")
    return quote(value, safe="")


async def get_tokenkeeper_token(user_id: str, provider_id: str, min_validity: int = 60,
                                force: bool = False, retries: int = 2,
                                max_wait: int = 10) -> dict | None:
    """A valid token as {"access_token", "token_type", "expires_at", "expires_in"}, or None when the
    user must (re)connect: no session yet (404) or a dead grant (409). Raises TokenUnavailable on a
    503 that outlasts the retries (or asks to wait longer than max_wait seconds)."""
    path = f"/v1/sessions/{_segment('user_id', user_id)}/{_segment('provider_id', provider_id)}/token"
    query = urlencode({"minValidity": min_validity, **({"force": "true"} if force else {})})
    url = f"{_base_url()}{path}?{query}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        for attempt in range(retries + 1):
            # encoded=True sends the path exactly as it was signed.
            async with http.get(URL(url, encoded=True), headers=_auth_headers("GET", url)) as res:
                body = await res.json(content_type=None)
                if res.status == 200:
                    return body
                if res.status in (404, 409):
                    return None  # 409 reauthorization_required: ask the user to connect again
                if res.status == 503:
                    wait = int(res.headers.get("Retry-After", "1"))
                    if attempt < retries and wait <= max_wait:
                        await asyncio.sleep(wait)
                        continue
                    raise TokenUnavailable(body.get("error_description", "refresh unavailable"), wait)
                raise RuntimeError(f"tokenkeeper: {res.status} {body.get('error') or body.get('message')}")
    raise AssertionError("unreachable")


async def connect_url(user_id: str, provider_id: str, redirect_uri: str | None = None) -> str:
    """Starts connecting a user to an MCP server through tokenkeeper: the URL to send the user's
    browser to. tokenkeeper runs the OAuth flow (PKCE, state, resource). With redirect_uri, its
    callback keeps the tokens as a pending connection and sends the browser to
    redirect_uri?status=pending&connection=<id>&providerId=<p> (or status=error&error=...): call
    complete_connection for the signed-in user there. Without one, the callback stores the session
    for user_id itself, whoever opens the URL. redirect_uri must match TOKENKEEPER_ALLOWED_REDIRECTS."""
    path = f"/v1/sessions/{_segment('user_id', user_id)}/{_segment('provider_id', provider_id)}/authorize"
    url = f"{_base_url()}{path}"
    body = json.dumps({"redirectUri": redirect_uri} if redirect_uri else {})
    headers = {"content-type": "application/json", **_auth_headers("POST", url, body)}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.post(URL(url, encoded=True), data=body, headers=headers) as res:
            answer = await res.json(content_type=None)
            if res.status != 201:
                raise RuntimeError(f"tokenkeeper: {res.status} {answer.get('error') or answer.get('message')}")
            return answer["authorizationUrl"]


async def complete_connection(user_id: str, provider_id: str, connection_id: str) -> dict | None:
    """Completes a pending connection for user_id, the user Open WebUI has signed in (never an id
    taken from the browser's query): the session's metadata (no token), or None when tokenkeeper
    answers 404 connection_not_found (unknown, expired, already completed, or started for another
    user or server), in which case nothing changed."""
    path = (f"/v1/sessions/{_segment('user_id', user_id)}/{_segment('provider_id', provider_id)}"
            f"/connections/{_segment('connection_id', connection_id)}")
    url = f"{_base_url()}{path}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        async with http.post(URL(url, encoded=True), headers=_auth_headers("POST", url)) as res:
            answer = await res.json(content_type=None)
            if res.status == 200:
                return answer
            if res.status == 404 and answer.get("error") == "connection_not_found":
                return None
            raise RuntimeError(f"tokenkeeper: {res.status} {answer.get('error') or answer.get('message')}")


async def tool_server_tokens(user_id: str, server_ids: list[str]) -> dict[str, dict | None]:
    """Tokens for the tools listing, one server at a time: a server whose provider is down (503)
    is left out of this listing (None) instead of failing the whole listing."""
    tokens: dict[str, dict | None] = {}
    for server_id in server_ids:
        try:
            tokens[server_id] = await get_tokenkeeper_token(user_id, server_id, retries=0)
        except TokenUnavailable:
            tokens[server_id] = None  # try again on the next listing; the session is kept
    return tokens
