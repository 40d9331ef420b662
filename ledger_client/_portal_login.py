"""``mrvctl login``: a one-time sign-in link for the portal's web view. A browser cannot read a
role's key file, so the key signs the portal's EIP-4361 challenge here, and the portal answers
with a link that signs in the browser which opens it (once, within minutes)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # (imported by `portal_login_link`: the gateway daemon never loads them)
    import httpx
    from eth_account.signers.local import LocalAccount


class PortalRefused(Exception):
    """The portal refused the sign-in (its problem detail is the message)."""


def portal_login_link(portal_url: str, account: LocalAccount, *, ca_file: str | None = None,
                      timeout_s: float = 30.0) -> dict[str, Any]:
    """Sign the portal's challenge with ``account``; the portal's answer (``url``,
    ``expires_at``, ``address``, ``roles``). Raises ``PortalRefused`` or ``httpx.HTTPError``."""
    import httpx
    from eth_account.messages import encode_defunct

    verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca_file) if ca_file
                                     else True)
    with httpx.Client(base_url=portal_url.rstrip("/"), timeout=timeout_s, verify=verify) as c:
        r = c.post("/v1/auth/challenge", json={"address": account.address})
        _check(r)
        message = str(r.json()["message"])
        sig = account.sign_message(encode_defunct(text=message)).signature
        r = c.post("/v1/auth/link", json={"message": message, "signature": "0x" + sig.hex()})
        _check(r)
        answer: dict[str, Any] = r.json()
        return answer


def _check(r: httpx.Response) -> None:
    if r.status_code < 300:
        return
    try:
        detail = str(r.json().get("detail", r.text))
    except ValueError:
        detail = r.text[:300]
    raise PortalRefused(f"{r.status_code}: {detail}")
