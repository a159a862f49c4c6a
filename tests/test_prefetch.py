"""What `sandbox up --droplets systemd` takes from the network is got on the host, before the sandbox's network
namespace (no route, no DNS) exists (issue 19); inside it a missing piece is an error that says so, never a
download that fails with "unable to resolve host address".

These checks need no network: the paths that would fetch are refused or fail before any fetch.
tests/test_systemd_e2e.py and a fresh clone's `sandbox up` (README) show the fetching itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import ctlcontainer, netns, nspawn, prefetch, sysdroplets

REPO = Path(__file__).resolve().parents[1]


def test_debootstraps_output_becomes_a_few_progress_lines_one_per_stage() -> None:
    """Over a recorded run (886 lines: a retrieve and a validate line per package), at 0.2 s a line."""
    lines = (REPO / "tests/fixtures/debootstrap/bookworm-minbase.log").read_text().splitlines()
    reporter = nspawn.DebootstrapProgress(started=0.0)
    said = [m for i, line in enumerate(lines) if (m := reporter.feed(line, i * 0.2)) is not None]
    stages = [m.split(" (")[0] for m in said if "so far" not in m]
    assert stages == ["debootstrap: downloading packages", "debootstrap: extracting packages",
                      "debootstrap: installing the core packages", "debootstrap: unpacking packages",
                      "debootstrap: configuring packages", "debootstrap: unpacking packages",
                      "debootstrap: configuring packages", "debootstrap: base system installed"], said
    assert len(said) <= len(stages) + len(lines) * 0.2 / nspawn.PROGRESS_EVERY_S + 1, said
    # each package is retrieved, then validated: counted once (at 15 s, line 75)
    retrieved = sum(line.startswith("I: Retrieving") for line in lines[:76])
    assert said[1] == f"debootstrap: downloading packages, {retrieved} so far (15 s)", said
    assert said[-1] == f"debootstrap: base system installed ({(len(lines) - 1) * 0.2:.0f} s)"


def test_inside_a_namespace_an_uncached_root_is_an_error_not_a_debootstrap(tmp_path: Path) -> None:
    with pytest.raises(nspawn.NspawnError, match="network namespace with no route out") as e:
        nspawn.ensure_root(tmp_path / "cache", fetch=False)
    assert str((tmp_path / "cache").resolve()) in str(e.value)
    assert not (tmp_path / "cache").exists()  # no lock, no log, no half-made root: nothing was started


@pytest.mark.skipif(shutil.which("systemd-nspawn") is not None, reason="systemd-nspawn is installed here")
def test_inside_a_namespace_a_missing_nspawn_is_an_error_not_a_download(tmp_path: Path) -> None:
    with pytest.raises(nspawn.NspawnError, match="systemd-container cannot be downloaded"):
        nspawn.nspawn_binary(tmp_path / "cache", fetch=False)
    assert not (tmp_path / "cache").exists()


def test_named_packages_are_taken_as_they_are_and_nothing_is_built(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    agent, controller = tmp_path / "a.deb", tmp_path / "c.deb"
    agent.write_bytes(b"agent")
    controller.write_bytes(b"controller")
    monkeypatch.setenv(ctlcontainer.DEB_ENV, str(controller))
    said: list[str] = []
    assert prefetch.packages(str(agent), said.append) == (agent, controller)
    assert said == []  # no build-debs


def test_a_named_package_that_is_missing_is_an_error_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ctlcontainer.DEB_ENV, str(tmp_path / "c.deb"))
    monkeypatch.delenv(sysdroplets.DEB_ENV, raising=False)
    (tmp_path / "a.deb").write_bytes(b"agent")
    with pytest.raises(prefetch.PrefetchError, match="no controller package at"):
        prefetch.packages(str(tmp_path / "a.deb"), lambda _m: None)


@pytest.mark.skipif(os.geteuid() != 0, reason="sandbox up --droplets systemd needs root")
def test_up_fails_on_the_host_before_making_the_namespace(tmp_path: Path) -> None:
    """A step before the namespace failing (here: the agent package named is not there) is reported as such,
    and leaves no namespace behind."""
    root = tmp_path / "sb"
    env = {**os.environ, sysdroplets.CACHE_ENV: str(tmp_path / "cache")}
    env.pop(netns.ENV, None)
    done = subprocess.run([sys.executable, "-m", "sandbox", "up", "--droplets", "systemd", "--dir", str(root),
                           "--agent-deb", str(tmp_path / "missing.deb")],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO, check=False)
    assert done.returncode == 1, done.stderr
    assert "on the host before entering the sandbox's network namespace" in done.stderr, done.stderr
    assert f"no agent package at {tmp_path / 'missing.deb'}" in done.stderr, done.stderr
    assert not Path("/run/netns", netns.name_for(root.resolve())).exists()
    assert not (root / netns.STATE_FILE).exists()
    assert not (tmp_path / "cache").exists()  # the package is checked before minutes of debootstrap
