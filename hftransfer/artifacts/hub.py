"""Publish an output folder to a Hugging Face hub as one atomic commit.

The files to upload are first staged in a separate folder (the same code path serves
`--dry-run`), so the output folder itself is never modified: the staged copy gets a card
naming the repo, and, with `merge`, a merged model instead of the adapter. The token comes
from `huggingface_hub` (HF_TOKEN or `hf auth login`) and is checked never to appear in
anything staged, logged or raised.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from hftransfer.artifacts.card import base_model_id, write_model_card
from hftransfer.artifacts.client import client_kind, mark_output_folder, point_adapter_at_repo
from hftransfer.artifacts.layout import ADAPTER_CONFIG_FILE, CARD_FILE, RECIPE_FILE, RESULTS_FILE
from hftransfer.artifacts.saved import is_adapter_folder
from hftransfer.config.recipe import load_config, save_config
from hftransfer.errors import UserError

try:  # huggingface_hub 2.x ships its HTTP client as `httpx2`; 1.x used `httpx`
    import httpx2 as _httpx
except ImportError:  # pragma: no cover
    import httpx as _httpx

logger = logging.getLogger("hftransfer")

REQUIRED_FILES = (RESULTS_FILE, RECIPE_FILE)
UPLOAD_SUBFOLDERS = ("onnx",)
"""Subfolders published with the model; others (checkpoints/, runs/) stay local."""
SKIPPED_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "trainer_state.json", ".gitignore"}
SKIPPED_SUFFIXES = (".tmp", ".lock", ".incomplete", ".pth")
WEIGHT_SUFFIXES = (".safetensors", ".onnx", ".onnx_data", ".bin")
"""Files a dry run links rather than copies (the model's weights: large, and never rewritten by staging)."""
NETWORK_ERRORS = (_httpx.TransportError, ConnectionError, TimeoutError)


class HubError(UserError):
    """A push that cannot go ahead or did not complete; the message says what happened to the upload."""


@dataclass
class PushResult:
    repo_id: str
    url: str
    commit: str | None
    files: list[str]
    attempts: int = 1
    endpoint: str = ""
    skipped: list[str] = field(default_factory=list)
    client: str = ""
    """How `transformers.pipeline` reads what was pushed (`hftransfer.artifacts.client.CLIENT_LINES`)."""


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub to talk to: an explicit endpoint, else HF_ENDPOINT (read now, not at import), else huggingface.co."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def check_repo_id(repo_id: str) -> str:
    if repo_id.count("/") != 1 or not all(repo_id.split("/")) or any(c.isspace() for c in repo_id):
        raise HubError(f"--repo-id '{repo_id}' must look like 'user/name' or 'org/name'.")
    return repo_id


def upload_candidates(output_dir: Path) -> list[str]:
    """Relative paths of the output folder's files that belong on the hub (model, tokenizer, recipe, results)."""
    paths = []
    for path in sorted(output_dir.rglob("*")):
        relative = path.relative_to(output_dir)
        if not path.is_file() or path.name in SKIPPED_FILES or path.name.endswith(SKIPPED_SUFFIXES):
            continue
        if len(relative.parts) > 1 and relative.parts[0] not in UPLOAD_SUBFOLDERS:
            continue
        paths.append(relative.as_posix())
    return paths


def stage_upload(
    output_dir: str | Path,
    staging: str | Path,
    *,
    repo_id: str | None = None,
    merge: bool = False,
    base_model: str | None = None,
    link_weights: bool = False,
) -> list[str]:
    """Write into `staging` exactly the files a push uploads, and return their relative paths.

    `merge` folds an adapter into its base model; `base_model` (a hub id) replaces a local base path
    in the staged adapter config and card, so the published adapter loads anywhere. `link_weights` (dry runs)
    stages weight files, which staging never rewrites, as symbolic links to the output folder's instead of copies.
    """
    output_dir, staging = Path(output_dir), Path(staging)
    if not output_dir.exists():
        raise HubError(f"Folder {output_dir} does not exist (relative to {Path.cwd()}); push a run's output folder.")
    missing = [name for name in REQUIRED_FILES if not (output_dir / name).is_file()]
    if not output_dir.is_dir() or missing:
        raise HubError(
            f"{output_dir} is not a finished hftransfer output folder (missing {missing or 'the folder'}); "
            "push the folder a training run wrote."
        )
    adapter = is_adapter_folder(output_dir)
    if merge and not adapter:
        raise HubError(f"--merge is for adapter outputs (LoRA); {output_dir} already holds a full model. Drop --merge.")
    staging.mkdir(parents=True, exist_ok=True)
    if merge:
        _stage_merged(output_dir, staging)
    else:
        for relative in upload_candidates(output_dir):
            if relative == CARD_FILE:
                continue  # regenerated below for the repo
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            if link_weights and relative.endswith(WEIGHT_SUFFIXES):
                (staging / relative).symlink_to((output_dir / relative).resolve())
            else:
                shutil.copy2(output_dir / relative, staging / relative)
        mark_output_folder(staging)  # a folder written before folders were marked gets marked in the copy
    if base_model:
        _record_base_model(staging, base_model, rewrite_adapter=adapter and not merge)
    if adapter and not merge and repo_id:
        point_adapter_at_repo(staging, repo_id)
    write_model_card(staging, model_ref=repo_id or str(output_dir), merged=merge)
    return upload_candidates(staging)


def _record_base_model(staging: Path, base_model: str, rewrite_adapter: bool) -> None:
    recipe = load_config(staging / RECIPE_FILE)
    recipe.hub.base_model = base_model
    save_config(recipe, staging / RECIPE_FILE)
    if rewrite_adapter:
        adapter_file = staging / ADAPTER_CONFIG_FILE
        adapter_config = json.loads(adapter_file.read_text())
        adapter_config["base_model_name_or_path"] = base_model
        adapter_file.write_text(json.dumps(adapter_config, indent=2) + "\n")


def _stage_merged(output_dir: Path, staging: Path) -> None:
    """The merged model as `hftransfer export --merge` writes it, plus the results the card reports."""
    from hftransfer.artifacts.export import export_run

    export_run(output_dir, staging, merge=True, overwrite=True)
    shutil.copy2(output_dir / RESULTS_FILE, staging / RESULTS_FILE)


def dry_run(
    output_dir: str | Path,
    target: str | Path,
    *,
    repo_id: str | None = None,
    merge: bool = False,
    base_model: str | None = None,
    replace: bool = False,
) -> list[str]:
    """Stage the upload into `target` without any network; `replace` allows clearing an earlier preview."""
    if repo_id is not None:
        check_repo_id(repo_id)
    target = Path(target)
    if Path(output_dir).resolve() == target.resolve():
        raise HubError("The dry-run folder must differ from the output folder (which a push never modifies).")
    if target.exists() and any(target.iterdir()):
        if not replace:
            raise HubError(f"{target} exists and is not empty; choose an empty folder for the dry run.")
        shutil.rmtree(target)
    base_model = _checked_base_model(output_dir, base_model, merge)  # what the push would record, and its warning
    return stage_upload(output_dir, target, repo_id=repo_id, merge=merge, base_model=base_model, link_weights=True)


def resolve_base_model(output_dir: str | Path, base_model: str | None = None) -> str | None:
    """The hub id of the base model: explicit, else from the recipe or adapter config when it is a hub id."""
    if base_model:
        return base_model
    output_dir = Path(output_dir)
    if not (output_dir / RECIPE_FILE).is_file():
        return None  # not a finished output folder: staging says so
    recipe = load_config(output_dir / RECIPE_FILE)
    adapter_file = output_dir / ADAPTER_CONFIG_FILE
    adapter = json.loads(adapter_file.read_text()) if adapter_file.is_file() else None
    return base_model_id(recipe, adapter)


def _checked_base_model(output_dir: str | Path, base_model: str | None, merge: bool) -> str | None:
    """The base model's hub id (`resolve_base_model`); an adapter pushed without one gets a warning, in a push and
    in its dry run alike, since others cannot load a local base."""
    base_model = resolve_base_model(output_dir, base_model)
    if is_adapter_folder(output_dir) and not merge and not base_model:
        logger.warning(
            "The adapter's base model is a local path; others cannot load it, and the card will show BASE_MODEL "
            "in its place. Pass --base-model <hub id> (or set hub.base_model in the recipe) to record it on the hub."
        )
    return base_model


def push(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    merge: bool = False,
    base_model: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    attempts: int = 3,
    retry_wait_s: float = 2.0,
) -> PushResult:
    """Upload `output_dir` to `repo_id` in one commit, retrying transient failures, then verify the files."""
    check_repo_id(repo_id)
    output_dir = Path(output_dir)
    endpoint = hub_endpoint(endpoint)
    token = token or get_token()
    if not token:
        raise HubError(
            f"No Hugging Face token found for {endpoint}. Run `hf auth login` or set HF_TOKEN "
            "(a token with write access), then push again."
        )
    if constants.is_offline_mode():
        raise HubError("HF_HUB_OFFLINE is set, so nothing can be uploaded; unset it and push again.")
    base_model = _checked_base_model(output_dir, base_model, merge)
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="hftransfer-push-") as tmp:
        staging = Path(tmp)
        files = stage_upload(output_dir, staging, repo_id=repo_id, merge=merge, base_model=base_model)
        client = client_kind(staging)
        _refuse_secret(staging, files, token)
        with _explained(endpoint, repo_id, token, "nothing was uploaded"):
            _check_remote(api, repo_id, revision, staging)
            url = str(api.create_repo(repo_id, private=private, exist_ok=True))
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit, used = _commit_with_retries(
            api,
            repo_id,
            staging,
            files,
            revision,
            commit_message or f"Upload {output_dir.name} with hftransfer",
            attempts,
            retry_wait_s,
            endpoint,
            token,
        )
        with _explained(endpoint, repo_id, token, f"the commit {commit} was made but could not be checked"):
            remote = {s.rfilename for s in api.model_info(repo_id, revision=revision).siblings or []}
        absent = sorted(set(files) - remote)
        if absent:
            raise HubError(f"The hub reports commit {commit} in {repo_id} but lacks {absent}; push again.")
    logger.info("Pushed %d files to %s (commit %s)", len(files), url, commit)
    return PushResult(
        repo_id=repo_id, url=url, commit=commit, files=files, attempts=used, endpoint=endpoint, client=client
    )


def _commit_with_retries(
    api: HfApi,
    repo_id: str,
    staging: Path,
    files: list[str],
    revision: str | None,
    message: str,
    attempts: int,
    retry_wait_s: float,
    endpoint: str,
    token: str,
) -> tuple[str | None, int]:
    """One commit holds every file, so a failure leaves the repo as it was; transient failures are retried."""
    last: Exception | None = None
    for attempt in range(1, max(attempts, 1) + 1):
        operations = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(staging / f)) for f in files]
        try:
            info = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
            return info.oid, attempt
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else None
            if status is not None and status < 500 and status not in (408, 429):
                with _explained(endpoint, repo_id, token, "no commit was made"):
                    raise
            last = err
        except NETWORK_ERRORS as err:
            last = err
        logger.warning("Upload attempt %d/%d to %s failed: %s", attempt, attempts, repo_id, _summary(last, token))
        if attempt < attempts:
            time.sleep(retry_wait_s * attempt)
    raise HubError(
        f"Uploading to {repo_id} on {endpoint} failed {attempts} times (last error: "
        f"{type(last).__name__}: {_summary(last, token)}). The hub commit is atomic, so the repo is unchanged; "
        "the local output folder is untouched. Push again when the hub is reachable."
    )


def _check_remote(api: HfApi, repo_id: str, revision: str | None, staging: Path) -> None:
    """Refuse to push over a repo that holds a different kind of model (other architecture, adapter vs full)."""
    try:
        info = api.model_info(repo_id, revision=revision)
    except RepositoryNotFoundError:
        return  # created below
    except RevisionNotFoundError:
        info = api.model_info(repo_id)  # the branch will be created from the default branch
    remote_files = {s.rfilename for s in info.siblings or []}
    remote_config = info.config or {}
    remote_adapter = ADAPTER_CONFIG_FILE in remote_files or "peft" in remote_config
    remote_model = remote_adapter or "config.json" in remote_files or "model_type" in remote_config
    if not remote_model:
        return  # an empty repo, or one with only docs
    local_adapter = (staging / ADAPTER_CONFIG_FILE).is_file()
    kind = {True: "a PEFT adapter", False: "a full model"}
    if remote_adapter != local_adapter:
        raise HubError(
            f"{repo_id} already holds {kind[remote_adapter]}, and this output is {kind[local_adapter]}. "
            "Push to another --repo-id" + (" (or use --merge)" if local_adapter else "") + "."
        )
    local_type = _model_type(staging)
    remote_type = remote_config.get("model_type")
    if not local_adapter and remote_type and local_type and remote_type != local_type:
        raise HubError(
            f"{repo_id} already holds a '{remote_type}' model and this output is a '{local_type}' model. "
            "Push to another --repo-id, or delete the repo first if replacing it is intended."
        )


def _model_type(folder: Path) -> str | None:
    config = folder / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def _refuse_secret(staging: Path, files: list[str], token: str) -> None:
    secret = token.encode()
    leaked = [f for f in files if secret in (staging / f).read_bytes()]
    if leaked:
        raise HubError(f"Refusing to push: the access token appears in {leaked}. Remove it from those files.")


def _summary(err: BaseException | None, token: str | None) -> str:
    """The first line of an error, without the token: hub errors carry multi-line explanations."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return _redact(lines[0] if lines else type(err).__name__, token)


def _redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


@contextmanager
def _explained(endpoint: str, repo_id: str, token: str, outcome: str) -> Iterator[None]:
    """Turn hub and network exceptions into a HubError that says what happened and what to do."""
    try:
        yield
    except HubError:
        raise
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = {
            401: "the token was rejected; run `hf auth login` again or check HF_TOKEN",
            403: f"the token has no write access to {repo_id}; use a write token or a namespace you own",
        }.get(status, _summary(err, token))
        raise HubError(
            f"Push to {repo_id} on {endpoint} failed: {hint}. {outcome.capitalize()}; "
            "the local output folder is untouched."
        ) from None
    except NETWORK_ERRORS as err:
        raise HubError(
            f"Could not reach the hub at {endpoint} ({type(err).__name__}: {_summary(err, token)}). "
            f"{outcome.capitalize()}; the local output folder is untouched. Check the network or HF_ENDPOINT."
        ) from None


def push_configured(config, output_dir: str | Path) -> dict:
    """The recipe's `hub:` push at the end of training; a failure keeps the saved run and says how to retry."""
    hub = config.hub
    try:
        result = push(
            output_dir,
            hub.repo_id,
            private=hub.private,
            revision=hub.revision,
            merge=hub.merge_adapter,
            base_model=hub.base_model,
        )
    except HubError as err:
        retry = f"hftransfer push {output_dir} --repo-id {hub.repo_id}" + (" --merge" if hub.merge_adapter else "")
        raise HubError(
            f"Training finished and {output_dir} is saved, but the push failed. {err} Retry: `{retry}`."
        ) from None
    return {"repo_id": result.repo_id, "url": result.url, "commit": result.commit}
