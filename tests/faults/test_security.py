"""Part 5: security defaults. Services bind 127.0.0.1; compose publishes no database port and
binds what it publishes to 127.0.0.1; no credentials in git-tracked files; models load in
Keras safe mode (a Lambda layer is refused); nothing extracted or downloaded writes outside
MASKCLS_HOME."""

from __future__ import annotations

import inspect
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.faults import crafting
from tests.support import REPO
from tests.support.servers import Servers
from tests.support.zips import zip_of

from .conftest import Misbehaving


# --------------------------------------------------------------------------- binding


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            addr, hexport = fields[1].split(":")
            if int(hexport, 16) == port and fields[3] == "0A":  # LISTEN
                found.add(addr)
    return found


def test_stack_defaults_bind_loopback():
    import stack
    from maskcls.config import Settings

    assert stack.StackConfig.from_settings(Settings.from_env({})).host == "127.0.0.1"
    for fn in (stack.start_prefect_server, stack.start_mlflow_server):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1", fn.__name__
    assert 'host="${MLFLOW_HOST:-127.0.0.1}"' in (REPO / "mlflow" / "start.sh").read_text()


def test_running_servers_listen_on_loopback_only(servers: Servers):
    from urllib.parse import urlparse

    for url in (servers.api_url, servers.mlflow_url):
        addrs = _listening(urlparse(url).port)
        assert addrs, url
        assert addrs <= {"0100007F", "00000000000000000000000001000000"}, (url, addrs)  # 127.0.0.1, ::1


def test_compose_publishes_no_database_port_and_binds_loopback():
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        ports = service.get("ports") or []
        if "postgres" in str(service.get("image", "")) or name == "postgres":
            assert not ports and not service.get("network_mode"), name
        for port in ports:
            text = port if isinstance(port, str) else str(port.get("host_ip", "")) + ":"
            assert text.startswith("127.0.0.1:") or text.startswith("${MASKCLS_BIND_HOST:-127.0.0.1}:"), \
                (name, port)


# --------------------------------------------------------------------------- credentials

_SECRET_PATTERNS = [
    re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    # a quoted literal assigned to a password-like name in code or config (not a variable or ${...})
    re.compile(r"""(?i)(?:password|passwd|secret|api_?key|token)\w*["']?\s*[:=]\s*["']([^"'\s$<{]{4,})["']"""),
    # PASSWORD=literal in env files, compose, shell and Dockerfiles
    re.compile(r"""^\s*(?:export\s+|ENV\s+|-\s+)?[A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|API_KEY)[A-Z0-9_]*\s*[=:]\s*"""
               r"""(?!\$)([^\s"'#{]{4,})"""),
    # scheme://user:password@host with a literal password
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?![$<{])([^\s@/]{4,})@"),
]
# Placeholders by design.
_ALLOWED = {".env.example"}


def _benign(match: re.Match) -> bool:
    """A value that names a secret instead of being one (a variable, a placeholder, a test fixture)."""
    value = match.group(match.lastindex or 0).lower()
    names_one = re.fullmatch(r"[a-z_.]*(password|passwd|secret|token|key)[a-z_.]*", value) and (
        "_" in value or "." in value or value in {"password", "passwd", "secret", "token", "key"})
    return bool(names_one or any(w in value for w in ("change-me", "changeme", "example", "placeholder"))
                or value in {"none", "null", "true", "false"} or value.startswith(("$", "{", "<", "*")))


def test_no_credentials_in_git_tracked_files():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    hits = []
    for rel in files.decode().split("\0"):
        if not rel or rel in _ALLOWED or rel.endswith((".lock", ".json", ".png", ".jpg")):
            continue
        path = REPO / rel
        try:
            text = path.read_text(errors="strict")
        except (OSError, UnicodeDecodeError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for pattern in _SECRET_PATTERNS:
                match = pattern.search(line)
                if match and not _benign(match):
                    hits.append(f"{rel}:{n}: {line.strip()[:160]}")
    assert not hits, "possible credentials in tracked files:\n" + "\n".join(hits)


def test_env_example_holds_only_placeholders():
    for line in (REPO / ".env.example").read_text().splitlines():
        if re.match(r"^\s*\w*PASSWORD\w*\s*=", line):
            assert "change-me" in line, line
    assert ".env" in (REPO / ".gitignore").read_text().split()


# --------------------------------------------------------------------------- safe mode


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory) -> Path:
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    path = tmp_path_factory.mktemp("lambda") / "model.keras"
    model.save(path)
    return path


def test_keras_model_with_a_lambda_layer_is_refused(lambda_model):
    from maskcls.train import load_model

    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        load_model(lambda_model)


def test_classifier_refuses_a_lambda_model(lambda_model, tmp_path):
    from maskcls.config import PreprocessConfig
    from maskcls.inference import Classifier, write_settings

    settings = tmp_path / "preprocessing.json"
    write_settings(settings, PreprocessConfig(size=8), ["a", "b"])
    with pytest.raises(ValueError, match="(?i)lambda|safe_mode"):
        Classifier.load(lambda_model, settings)


# --------------------------------------------------------------------------- nothing outside MASKCLS_HOME


def _snapshot(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("kind", ["slip", "absolute", "symlink", "ok"])
def test_extraction_and_download_write_only_under_maskcls_home(kind, tmp_path, http_server: Misbehaving):
    from maskcls.config import Settings
    from maskcls.source import SourceError, fetch_source

    home = tmp_path / "home"
    settings = Settings.from_env({"MASKCLS_HOME": str(home)})
    entries = crafting.small_entries()
    if kind == "slip":
        body = crafting.slip_zip()
    elif kind == "absolute":
        entries[str(tmp_path / "abs-escape.png")] = crafting.encode(crafting.photo(), ".png")
        body = zip_of(entries)
    elif kind == "symlink":
        body = crafting.symlink_zip()
    else:
        body = zip_of(entries)
    http_server.files["/data.zip"] = body
    before = _snapshot(tmp_path)
    if kind == "ok":
        got = fetch_source(http_server.url("/data.zip"), settings.downloads_dir, progress=False)
        assert Path(got.root).resolve().is_relative_to(home.resolve())
    else:
        with pytest.raises(SourceError):
            fetch_source(http_server.url("/data.zip"), settings.downloads_dir, progress=False)
    new = _snapshot(tmp_path) - before
    outside = [p for p in new if not p.resolve().is_relative_to(home.resolve())
               and not p.is_relative_to(home)]
    assert outside == []
    assert not list(tmp_path.rglob("escaped.png")) and not (tmp_path / "abs-escape.png").exists()
    assert not [p for p in home.rglob("*") if p.is_symlink()]


def test_every_default_path_is_under_maskcls_home(tmp_path):
    from maskcls.config import Settings

    home = tmp_path / "home"
    s = Settings.from_env({"MASKCLS_HOME": str(home)})
    for path in (s.store_dir, s.downloads_dir, s.artifacts_dir, s.results_dir, s.locks_dir):
        assert path.is_relative_to(home.resolve()), path
    assert s.tracking_uri == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert zipfile  # (zip entries are checked by name before any byte is written: see above)
