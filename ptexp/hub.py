"""One quick check before loading from the Hugging Face hub, instead of minutes of retries when offline."""

from __future__ import annotations

import logging

from ptexp.errors import UserError

logging.getLogger("huggingface_hub").setLevel(logging.ERROR)


def check_hub_available(repo_id: str, repo_type: str, key: str) -> None:
    """Return if ``repo_id`` is in the local HF cache or answers on the hub; else raise one clear UserError."""
    from huggingface_hub import constants, repo_info, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError

    probe_file = "config.json" if repo_type == "model" else "README.md"
    try:
        if isinstance(try_to_load_from_cache(repo_id, probe_file, repo_type=repo_type), str):
            return
    except HFValidationError:
        raise UserError(
            f"{key}: {repo_id!r} is neither an existing folder nor a hub id; valid: a local folder, "
            "or a hub id such as 'namespace/name'"
        ) from None
    if constants.HF_HUB_OFFLINE:
        return  # offline mode: the loader itself reads its cache and fails at once if the files are not there
    try:
        repo_info(repo_id, repo_type=repo_type, timeout=10)
    except RepositoryNotFoundError:
        raise UserError(f"{key}: no {repo_type} {repo_id!r} on the Hugging Face hub (or it is private)") from None
    except Exception as err:
        raise UserError(
            f"{key}: cannot reach the Hugging Face hub for {repo_id!r} and it is not in the local cache "
            f"({type(err).__name__}). Valid offline: HF_HUB_OFFLINE=1 with a filled cache, a local folder"
            + (", or model=minilm / model=tiny" if repo_type == "model" else ", or data.data_dir=DIR")
        ) from None
