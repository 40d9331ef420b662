// Sign-in with a browser wallet (EIP-1193): the wallet signs the portal's EIP-4361 challenge
// (personal_sign); the portal checks it and sets the session cookie.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const button = document.getElementById("wallet-login");
  const status = document.getElementById("wallet-status");
  if (!button) return;
  button.addEventListener("click", async () => {
    const eth = window.ethereum;
    if (!eth || typeof eth.request !== "function") {
      status.textContent = button.dataset.none;
      return;
    }
    try {
      const [account] = await eth.request({ method: "eth_requestAccounts" });
      let r = await fetch("/v1/auth/challenge", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ address: account }),
      });
      if (!r.ok) throw new Error((await r.json()).detail || r.status);
      const { message } = await r.json();
      const signature = await eth.request({ method: "personal_sign", params: [message, account] });
      r = await fetch("/ui/session", {
        method: "POST", headers: { "Content-Type": "application/json" }, credentials: "same-origin",
        body: JSON.stringify({ message, signature, next: button.dataset.next }),
      });
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || r.status);
      window.location.assign(body.next);
    } catch (e) {
      status.textContent = button.dataset.failed.replace("{reason}", e.message || String(e));
    }
  });
});
