import io
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from hvq_utils import artifacts, get_preset, kaggle_auth
from hvq_utils.artifacts import locate, output_dir
from hvq_utils.manifest import ManifestError, atomic_output, write_manifest


def test_auto_finds_the_newest_artifact_of_the_stage(tmp_path, monkeypatch):
    write_manifest(tmp_path / "ds1" / "data", "prepare", get_preset("smoke"))
    write_manifest(tmp_path / "ds2" / "vq", "train-vqvae", get_preset("smoke"))
    monkeypatch.setattr("time.strftime", lambda *a: "2099-01-01T00:00:00Z")
    write_manifest(tmp_path / "ds3" / "nested" / "data", "prepare", get_preset("smoke", image_size=64))
    assert locate("prepare", "auto", roots=(str(tmp_path),)) == tmp_path / "ds3" / "nested" / "data"
    assert locate("train-vqvae", "auto", roots=(str(tmp_path),)) == tmp_path / "ds2" / "vq"


def test_nothing_found_says_how_to_attach_it(tmp_path):
    with pytest.raises(
        ManifestError, match="no 'encode' artifact under .*attach the earlier notebook's output"
    ):
        locate("encode", "auto", roots=(str(tmp_path),))


def test_an_explicit_path_of_the_wrong_stage_is_refused(tmp_path):
    write_manifest(tmp_path, "prepare", get_preset("smoke"))
    with pytest.raises(ManifestError, match="not 'encode'"):
        locate("encode", tmp_path)


def test_output_goes_under_runs_off_kaggle(monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setattr("hvq_utils.artifacts.detect_platform", lambda: "local")
    assert str(output_dir("vqvae")) == "runs/vqvae"
    assert str(output_dir("vqvae", "/tmp/x")) == "/tmp/x"


# --- Kaggle handles, publishing and credentials (kagglehub faked: nothing touches the network) ---

KAGGLE_VARS = (
    "KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR",
    "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_DATA_PROXY_URL", "KAGGLE_API_V1_TOKEN",
)
SECRET_USER = "whale-owner-7f3a"
SECRET_KEY = "k3y-9d8c7b6a5f4e3d2c1b0a"
SECRET_TOKEN = "KGAT_tok-0e1d2c3b4a5f"


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch):
    """No Kaggle credentials anywhere (own HOME, no KAGGLE_* variables), on a 'local' machine;
    variables the code under test sets are removed again afterwards."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in KAGGLE_VARS:
        monkeypatch.setenv(name, "")  # recorded, so teardown restores or removes it
        monkeypatch.delenv(name)
    monkeypatch.setattr("hvq_utils.kaggle_auth.detect_platform", lambda: "local")
    return home


class FakeKagglehub(types.ModuleType):
    """kagglehub's download and upload functions, recording calls and the credentials in the
    environment at the time; an upload keeps the files kagglehub itself would send."""

    def __init__(self, downloads=None, error=None):
        super().__init__("kagglehub")
        self.downloads = downloads or {}  # ref -> directory
        self.error = error
        self.calls = []
        self.uploaded = None

    def _env(self):
        return {k: os.environ.get(k) for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY")}

    def _download(self, kind, handle):
        self.calls.append((kind, handle, self._env()))
        if self.error is not None:
            raise self.error
        return str(self.downloads[handle])

    def dataset_download(self, handle, path=None, *, force_download=False, output_dir=None):
        return self._download("dataset", handle)

    def notebook_output_download(self, handle, path=None, *, force_download=False, output_dir=None):
        return self._download("notebook", handle)

    def dataset_upload(self, handle, local_dataset_dir, version_notes="", ignore_patterns=None):
        self.calls.append(("upload", handle, self._env(), version_notes, ignore_patterns))
        if self.error is not None:
            raise self.error
        self.uploaded = kagglehub_upload_set(local_dataset_dir, ignore_patterns)


def kagglehub_upload_set(folder, ignore_patterns) -> list[str]:
    """The files the installed kagglehub's dataset_upload sends, by its own code."""
    from kagglehub.datasets import DEFAULT_IGNORE_PATTERNS
    from kagglehub.gcs_upload import filtered_walk, normalize_patterns

    patterns = normalize_patterns(default=DEFAULT_IGNORE_PATTERNS, additional=ignore_patterns)
    return sorted(
        str((Path(root) / f).relative_to(folder))
        for root, _, files in filtered_walk(base_dir=str(folder), ignore_patterns=patterns)
        for f in files
    )


@pytest.fixture
def hub(monkeypatch):
    # the real modules the tests use, loaded before the fake takes kagglehub's name
    import kagglehub.datasets
    import kagglehub.exceptions
    import kagglehub.gcs_upload  # noqa: F401

    fake = FakeKagglehub()
    monkeypatch.setitem(sys.modules, "kagglehub", fake)
    return fake


@pytest.fixture
def logs():
    """Everything the package logs (it does not propagate to the root logger)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("hvq_utils")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def http_error(status: int):
    """kagglehub's HTTP error as its handle_call raises it."""
    import requests
    from kagglehub.exceptions import KaggleApiHTTPError

    response = requests.Response()
    response.status_code = status
    response.url = "https://www.kaggle.com/api/v1/datasets/download/me/hvq-vqvae"
    return KaggleApiHTTPError(f"{status} Client Error.\n\nResource not found at URL: ...", response=response)


def make_vqvae_artifact(out: Path) -> dict:
    """A finished train-vqvae output plus what a run leaves beside it."""
    manifest = write_manifest(out, "train-vqvae", get_preset("smoke"), files=["vqvae.keras"])
    (out / "vqvae.keras").write_bytes(b"model" * 100)
    (out / "log.csv").write_text("step,loss\n1,0.5\n")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "step-0000010.keras").write_bytes(b"ckpt" * 1000)
    (out / "tensorboard" / "train").mkdir(parents=True)
    (out / "tensorboard" / "train" / "events.out.tfevents.1.host").write_bytes(b"tb")
    (out / "run.json").write_text("{}")
    # a write a kill interrupted: atomic_output's own temporary name, here and in a folder
    atomic_output(out / "vqvae.keras").__enter__().write_bytes(b"half")
    (out / "samples").mkdir()
    atomic_output(out / "samples" / "sample_0000.png").__enter__().write_bytes(b"half")
    (out / "samples" / "sample_0001.png").write_bytes(b"png")
    (out / ".train-00003.tfrecord.tmp").write_bytes(b"shard")  # records.py's temporary shard
    (out / "notes.txt.tmp").write_bytes(b"t")
    (out / ".ipynb_checkpoints").mkdir()
    (out / ".ipynb_checkpoints" / "x-checkpoint.ipynb").write_text("{}")
    (out / "progress").mkdir()
    (out / "progress" / "top.npz").write_bytes(b"p")
    return manifest


EXPECTED_UPLOAD = ["log.csv", "manifest.json", "samples/sample_0001.png", "vqvae.keras"]


def test_handle_syntax(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    h = artifacts.parse_handle
    assert h("me/hvq-vqvae") == artifacts.KaggleHandle("dataset", "me/hvq-vqvae", bare=True)
    assert h("me/hvq-vqvae/versions/3").ref == "me/hvq-vqvae/versions/3"
    assert h("dataset:me/hvq-vqvae") == artifacts.KaggleHandle("dataset", "me/hvq-vqvae")
    assert h("notebook:me/hvq-02/versions/4") == artifacts.KaggleHandle("notebook", "me/hvq-02/versions/4")
    url = "https://www.kaggle.com/datasets/me/hvq-vqvae/versions/2?select=x"
    assert h(url) == artifacts.KaggleHandle("dataset", "me/hvq-vqvae/versions/2")
    assert h("https://www.kaggle.com/code/me/hvq-02-train-vqvae/output").kind == "notebook"
    for local in ("./me/x", "/abs/dir", "a/b/c", "me/x.keras", "vqvae", "~/runs/x", "me/x/versions/y"):
        assert h(local) is None, local
    assert h(Path("me/hvq-vqvae")) is None  # a Path is always local
    (tmp_path / "runs" / "vqvae").mkdir(parents=True)
    assert h("runs/vqvae") is None  # exists here: a local path
    assert h("runs/vqvae", local_wins=False).kind == "dataset"
    assert h("runs/other").ref == "runs/other"


def test_locate_downloads_a_dataset_handle_and_finds_the_artifact_inside(tmp_path, kaggle_env, hub, logs):
    root = tmp_path / "cache" / "datasets" / "me" / "hvq-vqvae" / "versions" / "3"
    write_manifest(root / "data", "prepare", get_preset("smoke"))
    manifest = write_manifest(root / "kaggle" / "working" / "vqvae", "train-vqvae", get_preset("smoke"))
    hub.downloads = {"me/hvq-vqvae": root, "me/hvq-vqvae/versions/3": root}
    found = locate("train-vqvae", "me/hvq-vqvae")
    assert found == root / "kaggle" / "working" / "vqvae"
    assert [c[:2] for c in hub.calls] == [("dataset", "me/hvq-vqvae")]
    assert locate("prepare", "dataset:me/hvq-vqvae/versions/3") == root / "data"
    assert hub.calls[-1][:2] == ("dataset", "me/hvq-vqvae/versions/3")
    line = logs.getvalue().splitlines()[0]
    for part in (str(found), "train-vqvae", "Kaggle dataset me/hvq-vqvae", manifest["created"]):
        assert part in line
    assert f"hash {manifest['hash'][:8]}" in line


def test_locate_fetches_a_notebook_output_and_picks_the_level(tmp_path, kaggle_env, hub):
    root = tmp_path / "notebook-output"
    write_manifest(root / "prior-top", "train-prior", get_preset("smoke"), level="top")
    write_manifest(root / "prior-middle", "train-prior", get_preset("smoke"), level="middle")
    hub.downloads = {"me/hvq-05-middle-prior": root}
    assert locate("train-prior", "notebook:me/hvq-05-middle-prior", level="middle") == root / "prior-middle"
    assert [c[:2] for c in hub.calls] == [("notebook", "me/hvq-05-middle-prior")]


def test_a_handle_without_the_stage_says_what_it_holds(tmp_path, kaggle_env, hub):
    write_manifest(tmp_path / "dl" / "data", "prepare", get_preset("smoke"))
    hub.downloads = {"me/hvq-data": tmp_path / "dl"}
    with pytest.raises(artifacts.ArtifactError, match="holds no 'encode' artifact but only prepare"):
        locate("encode", "me/hvq-data")


def test_a_local_path_wins_over_handle_parsing(tmp_path, monkeypatch, kaggle_env, hub):
    monkeypatch.chdir(tmp_path)
    write_manifest(tmp_path / "runs" / "vqvae", "train-vqvae", get_preset("smoke"))
    hub.error = AssertionError("a local path must not be downloaded")
    assert locate("train-vqvae", "runs/vqvae") == Path("runs/vqvae")
    # a local folder without a manifest of its own: the artifact inside it (an attached input)
    write_manifest(tmp_path / "input" / "hvq-vqvae" / "vqvae", "train-vqvae", get_preset("smoke"))
    attached = tmp_path / "input" / "hvq-vqvae"
    assert locate("train-vqvae", attached) == attached / "vqvae"
    with pytest.raises(ManifestError, match="holds no 'encode' artifact but only train-vqvae"):
        locate("encode", tmp_path / "input")
    assert hub.calls == []


def test_publish_uploads_only_what_the_next_stage_needs(tmp_path, kaggle_env, hub, logs, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_TOKEN)
    out = tmp_path / "vqvae"
    manifest = make_vqvae_artifact(out)
    result = artifacts.publish(out, "me/hvq-vqvae")
    (call,) = hub.calls
    assert call[:2] == ("upload", "me/hvq-vqvae")
    assert call[3] == f"train-vqvae {manifest['hash'][:8]}"
    assert hub.uploaded == EXPECTED_UPLOAD  # by kagglehub's own matching of the patterns passed
    assert result.files == EXPECTED_UPLOAD and result.handle == "me/hvq-vqvae"
    assert result.bytes == sum((out / f).stat().st_size for f in EXPECTED_UPLOAD)
    assert not any(f.startswith(("checkpoints/", "tensorboard/", "progress/")) for f in hub.uploaded)
    (line,) = logs.getvalue().splitlines()
    assert "published train-vqvae" in line and "me/hvq-vqvae" in line and "4 files" in line
    assert "left out 9 files: checkpoints/, tensorboard/, progress/, 6 temporary, hidden or run files" in line
    artifacts.publish(out, "dataset:me/hvq-vqvae", notes="after 10 steps")
    assert hub.calls[-1][3] == "after 10 steps"


def test_upload_listing_matches_kagglehub(tmp_path):
    out = tmp_path / "vqvae"
    make_vqvae_artifact(out)
    (out / "sub" / "__pycache__").mkdir(parents=True)
    (out / "sub" / "__pycache__" / "m.pyc").write_bytes(b"c")
    (out / "sub" / "keep~").write_bytes(b"c")
    (out / "sub" / "deep" / "checkpoints").mkdir(parents=True)
    # only the top-level checkpoints/ is training state
    (out / "sub" / "deep" / "checkpoints" / "kept.keras").write_bytes(b"c")
    kept, dropped = artifacts.upload_listing(out)
    assert kept == kagglehub_upload_set(out, list(artifacts.PUBLISH_IGNORE))
    assert kept == sorted([*EXPECTED_UPLOAD, "sub/deep/checkpoints/kept.keras"])
    assert sorted(kept + dropped) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
    )


def test_publish_ignore_names_the_folders_the_stages_write():
    from hvq_utils import loop, prepare, sample
    from hvq_utils.manifest import RUN_FILE

    ignore = artifacts.PUBLISH_IGNORE
    assert f"{loop.CHECKPOINTS}/" in ignore and f"{sample.PROGRESS}/" in ignore
    assert f"{prepare.SAMPLE_DIR}/" in ignore and RUN_FILE in ignore
    assert artifacts._ignored(prepare.PROGRESS, ignore)


def test_publish_refuses_before_uploading(tmp_path, kaggle_env, hub, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_TOKEN)
    out = tmp_path / "vqvae"
    make_vqvae_artifact(out)
    for bad in ("me/hvq-vqvae/versions/2", "notebook:me/hvq-02", "hvq-vqvae", "runs/x/y"):
        with pytest.raises(artifacts.ArtifactError, match="publish needs a dataset handle 'owner/slug'"):
            artifacts.publish(out, bad)
    (out / "vqvae.keras").unlink()
    with pytest.raises(ManifestError, match="lacks vqvae.keras, which its manifest lists"):
        artifacts.publish(out, "me/hvq-vqvae")
    with pytest.raises(ManifestError, match="has no manifest.json"):
        artifacts.publish(tmp_path / "unfinished", "me/hvq-vqvae")
    assert hub.calls == []


def fake_kaggle_secrets(monkeypatch, secrets: dict):
    """kaggle_secrets as a Kaggle notebook has it: get_secret raises for a secret not attached."""
    module = types.ModuleType("kaggle_secrets")

    class UserSecretsClient:
        def get_secret(self, label):
            if label not in secrets:
                raise RuntimeError(f"Unexpected response from the service. Response: {{'label': '{label}'}}")
            return secrets[label]

    module.UserSecretsClient = UserSecretsClient
    monkeypatch.setitem(sys.modules, "kaggle_secrets", module)
    monkeypatch.setattr("hvq_utils.kaggle_auth.detect_platform", lambda: "kaggle")


def fake_colab_userdata(monkeypatch, secrets: dict):
    """google.colab.userdata: get raises SecretNotFoundError for a secret not added."""
    userdata = types.ModuleType("google.colab.userdata")

    class SecretNotFoundError(Exception):
        pass

    def get(key):
        if key not in secrets:
            raise SecretNotFoundError(f"Secret {key} does not exist.")
        return secrets[key]

    userdata.get = get
    userdata.SecretNotFoundError = SecretNotFoundError
    colab = types.ModuleType("google.colab")
    colab.userdata = userdata
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    monkeypatch.setattr("hvq_utils.kaggle_auth.detect_platform", lambda: "colab")


def assert_never_shown(values, capsys, logs, *folders):
    shown = capsys.readouterr()
    text = shown.out + shown.err + logs.getvalue()
    for folder in folders:
        text += "".join(p.read_bytes().decode("latin-1") for p in Path(folder).rglob("*") if p.is_file())
    for value in values:
        assert value not in text


USER_AND_KEY = {"KAGGLE_API_TOKEN": None, "KAGGLE_USERNAME": SECRET_USER, "KAGGLE_KEY": SECRET_KEY}


def test_publish_takes_credentials_from_kaggle_secrets(tmp_path, kaggle_env, hub, logs, capsys, monkeypatch):
    fake_kaggle_secrets(monkeypatch, {"KAGGLE_USERNAME": SECRET_USER, "KAGGLE_KEY": SECRET_KEY})
    out = tmp_path / "vqvae"
    make_vqvae_artifact(out)
    artifacts.publish(out, "me/hvq-vqvae")
    assert hub.calls[0][2] == USER_AND_KEY  # in the environment when kagglehub uploads
    assert os.environ["KAGGLE_KEY"] == SECRET_KEY  # for this process (kaggle_env removes it again)
    assert "KAGGLE_USERNAME and KAGGLE_KEY from Kaggle Secrets" in logs.getvalue()
    assert_never_shown([SECRET_USER, SECRET_KEY], capsys, logs, out)


def test_colab_secrets_are_read_one_by_one(tmp_path, kaggle_env, hub, logs, capsys, monkeypatch):
    # kagglehub itself stops at the missing KAGGLE_API_TOKEN secret; these are found anyway
    fake_colab_userdata(monkeypatch, {"KAGGLE_USERNAME": SECRET_USER, "KAGGLE_KEY": f" {SECRET_KEY}\n"})
    write_manifest(tmp_path / "dl" / "codes", "encode", get_preset("smoke"))
    hub.downloads = {"me/hvq-codes": tmp_path / "dl"}
    assert locate("encode", "me/hvq-codes") == tmp_path / "dl" / "codes"
    assert hub.calls[0][2] == USER_AND_KEY
    assert "from Colab Secrets" in logs.getvalue()
    assert_never_shown([SECRET_USER, SECRET_KEY], capsys, logs, tmp_path / "dl")


def test_an_api_token_secret_is_preferred(kaggle_env, monkeypatch):
    fake_kaggle_secrets(monkeypatch, {"KAGGLE_API_TOKEN": SECRET_TOKEN, "KAGGLE_KEY": SECRET_KEY})
    assert kaggle_auth.ensure_credentials() == "Kaggle Secrets"
    assert os.environ["KAGGLE_API_TOKEN"] == SECRET_TOKEN and "KAGGLE_KEY" not in os.environ


def test_credentials_already_there_are_left_alone(tmp_path, kaggle_env, monkeypatch):
    module = types.ModuleType("kaggle_secrets")
    module.UserSecretsClient = lambda: pytest.fail("secrets read although credentials exist")
    monkeypatch.setitem(sys.modules, "kaggle_secrets", module)
    monkeypatch.setattr("hvq_utils.kaggle_auth.detect_platform", lambda: "kaggle")
    config_dir = tmp_path / "conf"
    config_dir.mkdir()
    (config_dir / "kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config_dir))
    assert kaggle_auth.ensure_credentials() == str(config_dir / "kaggle.json")
    monkeypatch.delenv("KAGGLE_CONFIG_DIR")
    (kaggle_env / ".kaggle").mkdir()
    (kaggle_env / ".kaggle" / "kaggle.json").write_text("{}")
    assert kaggle_auth.ensure_credentials().endswith(".kaggle/kaggle.json")
    (kaggle_env / ".kaggle" / "kaggle.json").unlink()
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert kaggle_auth.ensure_credentials() == "environment"


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and excinfo.value.__cause__ is None
    return message


@pytest.mark.parametrize("platform", ["local", "kaggle", "colab"])
def test_missing_credentials_is_one_line(tmp_path, kaggle_env, hub, monkeypatch, platform):
    if platform == "kaggle":
        fake_kaggle_secrets(monkeypatch, {"OTHER": "x"})
    elif platform == "colab":
        fake_colab_userdata(monkeypatch, {"KAGGLE_USERNAME": SECRET_USER})  # no key: not enough
    out = tmp_path / "vqvae"
    make_vqvae_artifact(out)
    with pytest.raises(artifacts.CredentialsError) as e:
        artifacts.publish(out, "me/hvq-vqvae")
    message = one_line(e)
    assert message.startswith("no Kaggle credentials: on Kaggle add KAGGLE_USERNAME and KAGGLE_KEY")
    assert "Add-ons > Secrets" in message and "~/.kaggle" in message
    assert hub.calls == [] and "KAGGLE_USERNAME" not in os.environ


def test_a_private_dataset_without_credentials_asks_for_them(kaggle_env, hub):
    hub.error = http_error(403)
    with pytest.raises(artifacts.CredentialsError) as e:
        locate("train-vqvae", "me/hvq-vqvae")
    assert one_line(e).startswith("no Kaggle credentials")


def test_a_refusal_with_credentials_says_so(tmp_path, kaggle_env, hub, monkeypatch):
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_TOKEN)
    out = tmp_path / "vqvae"
    make_vqvae_artifact(out)
    hub.error = http_error(401)
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.publish(out, "me/hvq-vqvae")
    assert one_line(e).startswith("Kaggle refused to upload to Kaggle dataset me/hvq-vqvae (HTTP 401)")


def test_not_found_is_one_line(kaggle_env, hub, monkeypatch):
    hub.error = http_error(404)
    with pytest.raises(artifacts.NotFoundOnKaggle) as e:
        locate("train-vqvae", "me/hvq-vqvae")
    message = one_line(e)
    assert message.startswith("Kaggle dataset me/hvq-vqvae not found (HTTP 404): check the handle")
    assert "artifacts.publish(out_dir, 'me/hvq-vqvae')" in message
    assert "none are set" in message and "not a local directory either" in message
    from kagglehub.exceptions import NotFoundError

    hub.error = NotFoundError()
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_TOKEN)
    with pytest.raises(artifacts.NotFoundOnKaggle) as e:
        locate("train-vqvae", "notebook:me/hvq-02")
    message = one_line(e)
    assert message.startswith("Kaggle notebook output me/hvq-02 not found: check the handle")
    assert "Save Version" in message and "local directory" not in message


def test_no_network_is_one_line(tmp_path, kaggle_env, hub, monkeypatch):
    import requests

    hub.error = requests.exceptions.ConnectionError("HTTPSConnectionPool(host='www.kaggle.com')\n...")
    with pytest.raises(artifacts.KaggleUnreachable) as e:
        locate("train-vqvae", "me/hvq-vqvae")
    message = one_line(e)
    assert message.startswith("cannot reach Kaggle to download Kaggle dataset me/hvq-vqvae (ConnectionError)")
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET_TOKEN)
    out = tmp_path / "vqvae"
    make_vqvae_artifact(out)
    hub.error = requests.exceptions.ReadTimeout("read timed out")
    with pytest.raises(artifacts.KaggleUnreachable) as e:
        artifacts.publish(out, "me/hvq-vqvae")
    assert "turn on Internet" in one_line(e)


def test_other_errors_pass_through(kaggle_env, hub):
    hub.error = ValueError("Invalid dataset handle")
    with pytest.raises(ValueError, match="Invalid dataset handle") as e:
        locate("train-vqvae", "me/hvq-vqvae")
    assert not isinstance(e.value, artifacts.ArtifactError)


def test_importing_touches_neither_kagglehub_nor_secrets():
    code = (
        "import sys, hvq_utils.artifacts, hvq_utils.kaggle_auth; "
        "print([m for m in ('kagglehub', 'kaggle_secrets', 'google.colab', 'requests') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_resume_source_takes_a_cut_off_local_output_and_fetches_a_handle(tmp_path, monkeypatch):
    from hvq_utils.artifacts import ArtifactError, resume_source

    cut_off = tmp_path / "drive" / "vqvae"
    (cut_off / "checkpoints").mkdir(parents=True)  # no manifest yet: the run was cut
    assert resume_source("train-vqvae", None) is None
    assert resume_source("train-vqvae", str(cut_off)) == cut_off
    with pytest.raises(ArtifactError, match="is not a directory; give the earlier output's folder"):
        resume_source("train-vqvae", str(tmp_path / "missing" / "x" / "y"))
    finished = tmp_path / "download" / "output" / "vqvae"
    write_manifest(finished, "train-vqvae", get_preset("smoke"))
    monkeypatch.setattr("hvq_utils.artifacts._fetch", lambda handle: tmp_path / "download")
    assert resume_source("train-vqvae", "notebook:me/hvq-02-train-vqvae") == finished
