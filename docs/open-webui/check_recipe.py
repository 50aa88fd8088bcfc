"""Drives tokenkeeper_client.py against a running tokenkeeper (CI: the local stack, bearer mode).

Usage: check_recipe.py <user with a session> <user whose grant is dead> <user whose provider is down>
       <provider id> <down provider id> <user with a pending connection> <its provider id> <its connection id>
One line per check; exit 0 when all pass.
"""

import asyncio
import sys

from tokenkeeper_client import (
    TokenUnavailable,
    complete_connection,
    connect_url,
    get_tokenkeeper_token,
    tool_server_tokens,
)


async def main(ok_user: str, dead_user: str, down_user: str, provider: str, down_provider: str,
               pending_user: str, pending_provider: str, connection: str) -> int:
    failures = 0

    def report(label: str, passed: bool, detail: str = "") -> None:
        nonlocal failures
        failures += 0 if passed else 1
        print(f"{'ok  ' if passed else 'FAIL'}  {label}{': ' + detail if detail else ''}", flush=True)

    token = await get_tokenkeeper_token(ok_user, provider)
    report("token 200", isinstance(token, dict) and bool(token.get("access_token")) and token.get("expires_in", 0) > 0)

    report("409 handled (None: reconnect)", await get_tokenkeeper_token(dead_user, provider) is None)
    report("404 handled (None: connect)", await get_tokenkeeper_token("nobody-" + ok_user, provider) is None)

    try:
        await get_tokenkeeper_token(down_user, down_provider, min_validity=86400, retries=0)
        report("503 with Retry-After handled", False, "no TokenUnavailable raised")
    except TokenUnavailable as err:
        report("503 with Retry-After handled", err.retry_after > 0, f"retry after {err.retry_after}s")

    listing = await tool_server_tokens(down_user, [down_provider, provider])
    report("tools listing survives a 503", listing.get(down_provider) is None and provider in listing)

    url = await connect_url("new-" + ok_user, provider)
    report("authorize URL (PKCE S256)", url.startswith("http") and "code_challenge_method=S256" in url)

    other = await complete_connection("other-" + pending_user, pending_provider, connection)
    report("completion for another user refused (None)", other is None)
    session = await complete_connection(pending_user, pending_provider, connection)
    report("completion for its user: the session, no token",
           isinstance(session, dict) and session.get("status") == "active" and "access_token" not in session)
    again = await complete_connection(pending_user, pending_provider, connection)
    report("second completion refused (None)", again is None)
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:9])))
