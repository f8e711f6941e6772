"""`hftransfer push` against a stand-in for the hub API on loopback: the files that arrive, dry runs,
the recipe option, errors (existing repo of another kind, no token, no network, failing commits),
and the token never landing in a file or a log."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from conftest import write_tsv
from huggingface_hub import constants

from hftransfer.artifacts import hub
from hftransfer.artifacts.saved import load_run
from hftransfer.cli import main
from hftransfer.config.recipe import load_config
from hftransfer.evaluation.scoring import predict_records
from hftransfer.training.pipeline import train

TOKEN = "hf_standinSECRET0123456789abcdef"
REPO = "alice/tiny-sentiment"
MODEL_FILES = {"config.json", "model.safetensors"}
COMMON_FILES = {"README.md", "config.yaml", "results.json", "labels.json", "tokenizer.json", "tokenizer_config.json"}
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "config.json", "modeling_hftransfer.py"}


class StandInHub:
    """Just enough of the hub's HTTP API for `HfApi.create_repo/model_info/create_branch/create_commit`."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[dict] = []
        self.fail_commits = 0
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def files(self, repo_id: str = REPO, branch: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id]["branches"][branch]

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos[repo_id] = {"private": False, "branches": {"main": dict(files)}, "commits": 0}


class _Handler(BaseHTTPRequestHandler):
    hub: StandInHub

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _reply(self, status: int, payload: dict, error_code: str | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if error_code:
            self.send_header("X-Error-Code", error_code)
        self.end_headers()
        self.wfile.write(body)

    def _record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.hub.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        return body

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._reply(401, {"error": "Invalid credentials"})
            return False
        return True

    def do_GET(self) -> None:
        self._record()
        match = re.fullmatch(r"/api/models/([^/]+/[^/?]+)(?:/revision/([^/?]+))?(?:\?.*)?", self.path)
        if not match:
            return self._reply(404, {"error": "not found"})
        repo_id, revision = match.group(1), match.group(2) or "main"
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._reply(404, {"error": "Repository not found"}, "RepoNotFound")
        if revision not in repo["branches"]:
            return self._reply(404, {"error": "Revision not found"}, "RevisionNotFound")
        files = repo["branches"][revision]
        config = json.loads(files["config.json"]) if "config.json" in files else {}
        return self._reply(
            200,
            {
                "id": repo_id,
                "sha": f"{repo['commits']:040x}",
                "private": repo["private"],
                "siblings": [{"rfilename": name} for name in sorted(files)],
                "config": {"model_type": config["model_type"]} if "model_type" in config else {},
            },
        )

    def do_POST(self) -> None:
        body = self._record()
        if self.path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            header = re.match(r"---\n(.*?)\n---\n", content, re.S)
            try:
                assert header and isinstance(yaml.safe_load(header.group(1)), dict)
            except (AssertionError, yaml.YAMLError):
                return self._reply(400, {"errors": [{"message": "invalid metadata"}]})
            return self._reply(200, {"errors": [], "warnings": []})
        if not self._authorized():
            return None
        if self.path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload['organization']}/{payload['name']}"
            if repo_id in self.hub.repos:
                return self._reply(409, {"error": "You already created this model repo"})
            self.hub.add_repo(repo_id, {})
            self.hub.repos[repo_id]["private"] = payload.get("visibility") == "private"
            return self._reply(200, {"url": f"{self.hub.url}/{repo_id}"})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit|branch)/([^/?]+)(?:\?.*)?", self.path)
        if not match or match.group(1) not in self.hub.repos:
            return self._reply(404, {"error": "Repository not found"}, "RepoNotFound")
        repo, action, revision = self.hub.repos[match.group(1)], match.group(2), match.group(3)
        if action == "branch":
            if revision in repo["branches"]:
                return self._reply(409, {"error": "branch exists"})
            repo["branches"][revision] = dict(repo["branches"]["main"])
            return self._reply(200, {})
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._reply(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        if self.hub.fail_commits:
            self.hub.fail_commits -= 1
            return self._reply(500, {"error": "storage backend unavailable"})
        added = {}
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] != "header":
                return self._reply(400, {"error": f"unexpected {item['key']}"})
        repo["branches"].setdefault(revision, {}).update(added)  # all or nothing, like the hub
        repo["commits"] += 1
        return self._reply(
            200,
            {
                "commitUrl": f"{self.hub.url}/{match.group(1)}/commit/{repo['commits']:040x}",
                "commitOid": f"{repo['commits']:040x}",
                "pullRequestUrl": None,
            },
        )


@pytest.fixture(scope="module")
def stand_in():
    server = StandInHub()
    yield server
    server.close()


@pytest.fixture
def hub_env(stand_in, monkeypatch, tmp_path):
    """Point huggingface_hub at the stand-in with a token; no saved login from this machine leaks in."""
    stand_in.repos.clear()
    stand_in.requests.clear()
    stand_in.fail_commits = 0
    monkeypatch.setenv("HF_ENDPOINT", stand_in.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
    return stand_in


@pytest.fixture(scope="module")
def runs(tiny_bert_dir, tmp_path_factory, stand_in) -> dict[str, Path]:
    """A full run pushed by its recipe (`hub.push`) and a LoRA run, both a couple of steps on a toy task."""
    folder = tmp_path_factory.mktemp("push-runs")
    rng = random.Random(2)
    rows = [
        [f"it was {w} {w}", int(w in ("good", "great"))] for w in rng.choices(["good", "great", "bad", "dull"], k=40)
    ]
    train_file = write_tsv(folder / "train.tsv", ["sentence", "label"], rows[:28])
    dev_file = write_tsv(folder / "dev.tsv", ["sentence", "label"], rows[28:])
    base = [
        f"model.name_or_path={tiny_bert_dir}",
        f"data.train_file={train_file}",
        f"data.validation_file={dev_file}",
        "train.max_steps=2",
        "train.batch_size=8",
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", stand_in.url)
        patch.setenv("HF_TOKEN", TOKEN)
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        full = train(
            load_config(None, [*base, f"train.output_dir={folder / 'full'}", "hub.push=true", f"hub.repo_id={REPO}"])
        )
        recipe_push = {**full["hub"], "files": set(stand_in.files())}
    train(load_config(None, [*base, f"train.output_dir={folder / 'lora'}", "strategy.name=lora"]))
    return {"full": folder / "full", "lora": folder / "lora", "recipe_push": recipe_push, "root": folder}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_recipe_push_at_the_end_of_training(runs, stand_in):
    assert runs["recipe_push"]["repo_id"] == REPO and runs["recipe_push"]["commit"]
    assert runs["recipe_push"]["files"] == MODEL_FILES | COMMON_FILES


def test_dry_run_stages_exactly_what_push_uploads(runs, hub_env, tmp_path, capsys):
    out, before = runs["full"], _digest(runs["full"])
    preview = tmp_path / "preview"
    assert main(["push", str(out), "--repo-id", REPO, "--dry-run", str(preview)]) == 0
    staged = {str(p.relative_to(preview)) for p in preview.rglob("*") if p.is_file()}
    assert staged == MODEL_FILES | COMMON_FILES  # no checkpoints/, no optimizer state
    listing = capsys.readouterr().out
    assert all(name in listing for name in staged)
    assert hub_env.requests == []  # a dry run never touches the network

    assert main(["push", str(out), "--repo-id", REPO, "--private"]) == 0
    received = hub_env.files()
    assert set(received) == staged
    assert all(received[name] == (preview / name).read_bytes() for name in staged)
    assert received["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert hub_env.repos[REPO]["private"]
    assert f'model="{REPO}"' in received["README.md"].decode()  # the pushed card names the repo
    assert _digest(out) == before  # the output folder is never modified


def test_token_is_sent_but_never_written_or_logged(runs, hub_env, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    result = hub.push(runs["full"], REPO, revision="v1")
    assert set(hub_env.files(branch="v1")) == set(result.files)
    writes = [r for r in hub_env.requests if r["method"] == "POST" and "/commit/" in r["path"]]
    assert writes and all(r["headers"]["authorization"] == f"Bearer {TOKEN}" for r in writes)
    hub.dry_run(runs["full"], tmp_path / "preview", repo_id=REPO)
    captured = capsys.readouterr()
    assert TOKEN not in caplog.text + captured.out + captured.err
    for path in [*runs["root"].rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert all(TOKEN.encode() not in content for content in hub_env.files(branch="v1").values())


def test_adapter_push_records_the_base_model_and_merge_pushes_a_full_model(runs, hub_env, tmp_path):
    lora = runs["lora"]
    adapter_preview = tmp_path / "adapter"
    files = hub.dry_run(lora, adapter_preview, repo_id=REPO, base_model="google-bert/bert-base-uncased")
    assert set(files) == ADAPTER_FILES | COMMON_FILES
    staged_adapter = json.loads((adapter_preview / "adapter_config.json").read_text())
    # On the Hub, pipeline() loads an adapter's named base as is: the repo names itself, its config.json the base.
    assert staged_adapter["base_model_name_or_path"] == REPO
    staged_config = json.loads((adapter_preview / "config.json").read_text())
    assert staged_config["hftransfer_base_model"] == "google-bert/bert-base-uncased"
    local_adapter = json.loads((lora / "adapter_config.json").read_text())
    assert local_adapter["base_model_name_or_path"] != "google-bert/bert-base-uncased"  # local folder unchanged
    card = (adapter_preview / "README.md").read_text()
    assert "library_name: peft" in card and "base_model: google-bert/bert-base-uncased" in card

    merged_preview = tmp_path / "merged"
    assert set(hub.dry_run(lora, merged_preview, repo_id=REPO, merge=True)) == MODEL_FILES | COMMON_FILES
    texts = ["it was great great", "it was dull dull"]
    adapter_scores = [r["scores"] for r in predict_records(load_run(lora), texts)]
    merged_scores = [r["scores"] for r in predict_records(load_run(merged_preview), texts)]
    for a, m in zip(adapter_scores, merged_scores, strict=True):
        assert m == pytest.approx(a, abs=1e-5)

    hub.push(lora, REPO, merge=True)
    assert set(hub_env.files()) == MODEL_FILES | COMMON_FILES


def test_dry_run_of_a_local_base_adapter_warns_and_its_card_holds_no_local_path(runs, hub_env, tmp_path, caplog,
                                                                                 capsys):  # fmt: skip
    """The dry run says what the push would (a local base cannot be loaded by others); the staged card names no
    absolute path (the tiny base lives in a temp folder, as a `pkg:` model lives in site-packages); weights are
    linked, not copied; the card tells the truth about installing hftransfer."""
    preview = tmp_path / "preview"
    with caplog.at_level(logging.WARNING, logger="hftransfer"):
        assert main(["push", str(runs["lora"]), "--repo-id", REPO, "--dry-run", str(preview)]) == 0
    assert "base model is a local path" in caplog.text
    card = (preview / "README.md").read_text()
    assert str(runs["root"]) not in card and str(Path.home()) not in card and "site-packages" not in card
    assert not re.search(r"(?<![\w.:/~-])/tmp/", card)
    assert "adapter weights (and the trained head) for `BASE_MODEL`" in card and "replace `BASE_MODEL`" in card
    assert "base_model:" not in card.split("---")[1]  # no hub id to record, and never the repo itself
    assert "pypi.org" not in card and "pip install hftransfer" not in card and "not on PyPI" in card
    weights = preview / "adapter_model.safetensors"
    assert weights.is_symlink() and weights.resolve() == (runs["lora"] / "adapter_model.safetensors").resolve()
    assert not (preview / "adapter_config.json").is_symlink() and not (preview / "config.yaml").is_symlink()
    assert "a link to" in capsys.readouterr().out
    before = _digest(runs["lora"])
    hub.dry_run(runs["lora"], preview, repo_id=REPO, base_model="google-bert/bert-base-uncased", replace=True)
    assert _digest(runs["lora"]) == before  # rewriting staged files never writes through a link
    assert "BASE_MODEL" not in (preview / "README.md").read_text()


def test_merge_of_a_full_model_is_refused(runs, hub_env, capsys):
    assert main(["push", str(runs["full"]), "--repo-id", REPO, "--merge", "--dry-run"]) == 2
    assert "--merge is for adapter outputs" in capsys.readouterr().err


def test_existing_repo_of_another_model_type_is_refused(runs, hub_env):
    other = {"config.json": json.dumps({"model_type": "roberta"}).encode(), "README.md": b"hello"}
    hub_env.add_repo(REPO, other)
    with pytest.raises(hub.HubError, match="already holds a 'roberta' model"):
        hub.push(runs["full"], REPO)
    assert hub_env.files() == other

    hub_env.add_repo(REPO, {"adapter_config.json": b"{}", "adapter_model.safetensors": b"x"})
    with pytest.raises(hub.HubError, match="already holds a PEFT adapter"):
        hub.push(runs["full"], REPO)
    assert not [r for r in hub_env.requests if "/commit/" in r["path"]]


def test_missing_token_is_a_clear_error_before_any_request(runs, hub_env, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert main(["push", str(runs["full"]), "--repo-id", REPO]) == 2
    assert "No Hugging Face token found" in capsys.readouterr().err
    assert hub_env.requests == []


def test_unreachable_hub_leaves_everything_untouched(runs, hub_env, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    before = _digest(runs["full"])
    with pytest.raises(hub.HubError, match="Could not reach the hub") as err:
        hub.push(runs["full"], REPO)
    assert "Nothing was uploaded" in str(err.value) and TOKEN not in str(err.value)
    assert _digest(runs["full"]) == before


def test_failed_commits_are_retried_then_reported(runs, hub_env):
    hub_env.fail_commits = 1
    result = hub.push(runs["full"], REPO, retry_wait_s=0)
    assert result.attempts == 2 and set(hub_env.files()) == set(result.files)

    hub_env.repos.clear()
    hub_env.fail_commits = 5
    with pytest.raises(hub.HubError, match=r"failed 2 times.*repo is unchanged"):
        hub.push(runs["full"], REPO, attempts=2, retry_wait_s=0)
    assert hub_env.files() == {}  # created, but no half-done commit


def test_bad_repo_id_and_unfinished_folder(tmp_path, capsys):
    assert main(["push", str(tmp_path), "--repo-id", "no-namespace", "--dry-run"]) == 2
    assert "must look like 'user/name'" in capsys.readouterr().err
    assert main(["push", str(tmp_path), "--repo-id", "a/b", "--dry-run"]) == 2
    assert "not a finished hftransfer output folder" in capsys.readouterr().err
