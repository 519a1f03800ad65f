"""`streamserve probe`: ask a local worker's /healthz or /readyz, for container health checks."""

from __future__ import annotations

import urllib.error
import urllib.request


def probe(port: int, ready: bool, timeout_s: float) -> tuple[bool, str]:
    """(the endpoint said ok, what it said or why there was no answer)."""
    url = f"http://127.0.0.1:{port}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return True, response.read().decode()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode()
    except OSError as exc:
        return False, f"no answer from {url}: {exc}"
