"""Kaggle credentials for kagglehub, found where a notebook user keeps them.

kagglehub reads KAGGLE_API_TOKEN, or KAGGLE_USERNAME and KAGGLE_KEY, from the environment,
~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR/kaggle.json) and, in Colab, Colab's Secrets; it
never reads Kaggle's own Secrets (Add-ons > Secrets in a Kaggle notebook). `ensure_credentials`
fills that gap: when kagglehub would find nothing, it reads the same names from Kaggle Secrets
(on Kaggle) or Colab Secrets (on Colab, each name on its own: kagglehub gives up on Colab
when the KAGGLE_API_TOKEN secret is missing) and puts them in this process's environment.
The values are never printed, logged or written anywhere; only the names are mentioned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from hvq_utils.artifacts import CredentialsError
from hvq_utils.runtime import detect_platform

log = logging.getLogger(__name__)

TOKEN = "KAGGLE_API_TOKEN"
USERNAME = "KAGGLE_USERNAME"
KEY = "KAGGLE_KEY"

NO_CREDENTIALS = (
    "no Kaggle credentials: on Kaggle add KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN) "
    "under Add-ons > Secrets and tick them for this notebook; on Colab add them under Secrets "
    "(key icon) with Notebook access on; elsewhere set KAGGLE_API_TOKEN or put kaggle.json in "
    "~/.kaggle (tokens: kaggle.com > Settings > API)"
)


def credentials_source() -> str | None:
    """Where kagglehub would find credentials now ("environment", "kaggle.json", ...), or None.
    Only looks whether they are there; reads no value."""
    env = os.environ
    if env.get(TOKEN) or (env.get(USERNAME) and env.get(KEY)):
        return "environment"
    folder = Path(env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    if (folder / "kaggle.json").is_file():
        return str(folder / "kaggle.json")
    for name in ("access_token", "access_token.txt"):
        if (Path.home() / ".kaggle" / name).is_file():
            return f"~/.kaggle/{name}"
    # The token a Kaggle notebook may be given for its own user (read by kagglehub there).
    v1 = env.get("KAGGLE_API_V1_TOKEN")
    if env.get("KAGGLE_KERNEL_RUN_TYPE") and env.get("KAGGLE_DATA_PROXY_URL") and v1 and Path(v1).is_file():
        return "the Kaggle notebook's token"
    return None


def _clean(value) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.replace("\r", "").replace("\n", "").strip()
    return value or None


def _secret_reader(platform: str) -> tuple[str, Callable[[str], str | None]] | None:
    """(where, read(name) -> value or None) for the platform's secret store, if it has one."""
    if platform == "kaggle":
        try:
            from kaggle_secrets import UserSecretsClient
        except ImportError:
            return None
        try:
            client = UserSecretsClient()
        except Exception:  # the secrets service is unavailable: no secrets
            return None

        def read(name: str) -> str | None:
            try:
                return _clean(client.get_secret(name))
            except Exception:  # a secret not added, or not attached, raises
                return None

        return "Kaggle Secrets", read
    if platform == "colab":
        try:
            from google.colab import userdata
        except ImportError:
            return None

        def read(name: str) -> str | None:
            try:
                return _clean(userdata.get(name))
            except Exception:  # SecretNotFoundError, NotebookAccessError
                return None

        return "Colab Secrets", read
    return None


def ensure_credentials(required: bool = True) -> str | None:
    """Make sure kagglehub can authenticate; returns where the credentials are (None if
    nowhere and not `required`).

    If none are in the environment or a credentials file, KAGGLE_API_TOKEN, else
    KAGGLE_USERNAME and KAGGLE_KEY, are read from Kaggle Secrets (on Kaggle) or Colab Secrets
    (on Colab) and set in os.environ for this process only. Raises CredentialsError (one line
    saying where to add them) if `required` and there are none.
    """
    source = credentials_source()
    if source is not None:
        return source
    store = _secret_reader(detect_platform())
    if store is not None:
        where, read = store
        found: dict[str, str] = {}
        if token := read(TOKEN):
            found = {TOKEN: token}
        else:
            username = _clean(os.environ.get(USERNAME)) or read(USERNAME)
            key = _clean(os.environ.get(KEY)) or read(KEY)
            if username and key:
                found = {USERNAME: username, KEY: key}
        if found:
            os.environ.update(found)
            log.info("Kaggle credentials: %s from %s, for this session only", " and ".join(found), where)
            return where
    if required:
        raise CredentialsError(NO_CREDENTIALS)
    return None
