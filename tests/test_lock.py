"""The lock (requirements/dev.txt, agent.txt, controller.txt, made by scripts/lock) agrees with pyproject.toml
and packaging/*/dependencies: every requirement is met by a pin on each supported Python, each header's input
hash is that of today's inputs, the packages' locks pin what dev.txt pins, every pin has hashes, and the agent's
lock holds nothing of the controller's. Reads files only (no network, no uv).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "requirements"


def _lock_tool() -> ModuleType:
    """scripts/lock as a module: the test hashes and reads the files with the same functions that wrote them."""
    loader = SourceFileLoader("redwarden_lock_tool", str(ROOT / "scripts" / "lock"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


lock = _lock_tool()


def _env(python: str) -> dict[str, str]:
    """The marker environment of the supported releases' CPython on x86-64 Linux."""
    return {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
            "implementation_name": "cpython", "implementation_version": python,
            "platform_python_implementation": "CPython", "platform_system": "Linux", "sys_platform": "linux",
            "os_name": "posix", "platform_machine": "x86_64", "platform_release": "", "platform_version": "",
            "extra": ""}


# Ubuntu 22.04, Debian 12, Ubuntu 24.04
ENVS = {"3.10.12": _env("3.10.12"), "3.11.2": _env("3.11.2"), "3.12.3": _env("3.12.3")}


def _applies(marker: str | None, env: dict[str, str]) -> bool:
    return marker is None or Marker(marker).evaluate(env)


def _resolved(name: str, env: dict[str, str]) -> dict[str, str]:
    """The lock's pins that apply in env: distribution -> version (at most one each)."""
    found: dict[str, str] = {}
    for pin in lock.read_pins(REQUIREMENTS / f"{name}.txt"):
        if _applies(pin.marker, env):
            assert pin.name not in found, f"{name}.txt: two pins of {pin.name} apply on {env['python_full_version']}"
            found[pin.name] = pin.version
    return found


def _pyproject_requirements() -> list[str]:
    meta: dict[str, Any] = lock.load_pyproject(ROOT)
    extras = meta["project"]["optional-dependencies"]
    return [*meta["build-system"]["requires"], *meta["project"]["dependencies"], *extras["dev"], *extras["sandbox"]]


@pytest.mark.parametrize("python", ENVS)
def test_every_requirement_of_pyproject_is_met_by_a_pin_of_the_dev_lock(python: str) -> None:
    env = ENVS[python]
    pins = _resolved("dev", env)
    unmet = []
    for text in _pyproject_requirements():
        req = Requirement(text)
        if lock.norm(req.name) == "redwarden" or (req.marker is not None and not req.marker.evaluate(env)):
            continue
        version = pins.get(lock.norm(req.name))
        if version is None or not req.specifier.contains(Version(version), prereleases=True):
            unmet.append(f"{text} (dev.txt: {version})")
    assert unmet == [], f"pyproject.toml and requirements/dev.txt disagree on Python {python}: make lock"


def test_each_header_holds_the_hash_of_todays_inputs() -> None:
    inputs = lock.lock_inputs(ROOT)
    for name in lock.LOCKS:
        want = lock.inputs_sha256(name, inputs[name])
        got = lock.recorded_sha256(REQUIREMENTS / f"{name}.txt")
        assert got == want, f"requirements/{name}.txt was made from other inputs than today's: make lock"


def test_the_input_hash_changes_with_a_requirement(tmp_path: Path) -> None:
    """The check above can fail: a range changed in a copy of pyproject.toml gives another hash."""
    (tmp_path / "packaging").mkdir()
    for name in ("agent", "controller"):
        shutil.copytree(ROOT / "packaging" / name, tmp_path / "packaging" / name)
    text = (ROOT / "pyproject.toml").read_text()
    assert '"redis>=5.0"' in text
    (tmp_path / "pyproject.toml").write_text(text.replace('"redis>=5.0"', '"redis>=5.1"'))
    before, after = lock.lock_inputs(ROOT), lock.lock_inputs(tmp_path)
    for name in lock.LOCKS:  # redis is in all three
        assert lock.inputs_sha256(name, before[name]) != lock.inputs_sha256(name, after[name])


@pytest.mark.parametrize("name", ["agent", "controller"])
@pytest.mark.parametrize("python", ENVS)
def test_a_packages_lock_pins_what_the_dev_lock_pins(name: str, python: str) -> None:
    env = ENVS[python]
    dev, package = _resolved("dev", env), _resolved(name, env)
    differ = {d: (v, dev.get(d)) for d, v in package.items() if dev.get(d) != v}
    assert differ == {}, f"requirements/{name}.txt and dev.txt pin other versions (theirs, dev's): make lock"
    # and it holds each distribution its dependencies file names (where pyproject's marker applies there)
    named = set(lock.dependency_names(ROOT / "packaging" / name / "dependencies"))
    wanted = {lock.norm(r.name) for r in map(Requirement, lock.lock_inputs(ROOT)[name])
              if lock.norm(r.name) in named and (r.marker is None or r.marker.evaluate(env))}
    assert wanted - set(package) == set()


@pytest.mark.parametrize("name", ["dev", "agent", "controller"])
def test_every_pin_is_exact_and_has_its_hashes(name: str) -> None:
    pins = lock.read_pins(REQUIREMENTS / f"{name}.txt")
    assert pins
    bare = [p.name for p in pins if not p.hashes]
    assert bare == []
    malformed = [h for p in pins for h in p.hashes if not (h.startswith("sha256:") and len(h) == 7 + 64)]
    assert malformed == []


def test_the_agent_lock_has_nothing_of_the_controllers() -> None:
    names = {p.name for p in lock.read_pins(REQUIREMENTS / "agent.txt")}
    assert names & {"fastapi", "uvicorn", "pydantic", "pydo", "starlette", "cryptography"} == set()
    assert {"psutil", "redis", "requests", "structlog", "apscheduler", "tomli"} <= names


def test_a_range_or_a_missing_hash_is_not_a_pin(tmp_path: Path) -> None:
    """read_pins refuses what `pip install --require-hashes` would refuse."""
    bad = tmp_path / "bad.txt"
    bad.write_text("redis>=5.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        lock.read_pins(bad)
    bare = tmp_path / "bare.txt"
    bare.write_text("redis==8.2.0\n")
    assert lock.read_pins(bare)[0].hashes == ()
