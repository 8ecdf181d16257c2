"""A regular install works: build a wheel of this tree, install it (not editable)
into a fresh venv, and from there load the datapath's BPF C out of the installed
package and compile and load it with bcc; the contrib files, the LICENSE and the
compiled parts are installed too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheels = tmp / "dist"
    # --no-build-isolation: the project venv's setuptools/wheel, no download
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, cwd=tmp, timeout=600)
    wheel, = wheels.glob("argoctl-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, timeout=300)
    # Its dependencies (and Debian's bcc) from the project venv, behind the
    # installed package on sys.path: the argoctl imported is the wheel's.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    deps = [sysconfig.get_paths()["purelib"]]
    deps += [line.strip() for pth in Path(deps[0]).glob("argoctl-sys.pth")
             for line in pth.read_text().splitlines() if line.strip()]
    Path(site.stdout.strip(), "zz-project-deps.pth").write_text("\n".join(deps) + "\n")
    return {"wheel": wheel, "venv": venv, "py": py}


def run_in(installed, code: str) -> str:
    # from / so neither the repository nor its argoctl/ is on the path
    proc = subprocess.run([str(installed["py"]), "-c", textwrap.dedent(code)], cwd="/",
                          capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items()
                               if k not in ("PYTHONPATH", "ARGOCTL_BPF_DIR")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_wheel_holds_the_datapath_source_contrib_and_license(installed):
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for f in ("argoctl/bpf/steer_tc.c", "argoctl/bpf/passive_tc.c", "argoctl/bpf/steer_sock.c",
              "argoctl/bpf/include/maps.h", "argoctl/lab/scenarios/outage.toml"):
        assert f in names, f
    assert any(n.endswith("data/share/argoctl/contrib/argoctl.service") for n in names)
    assert any(n.endswith("data/share/argoctl/contrib/argoctl-responder.service") for n in names)
    assert any(n.endswith("data/share/argoctl/contrib/rt_protos.d/argoctl.conf") for n in names)
    assert any(n.endswith("/LICENSE") for n in names)
    assert any(n.startswith("argoctl/_echo.") and n.endswith(".so") for n in names)
    # the version is written once (argoctl/__init__.py) and the wheel carries it
    from argoctl import __version__
    assert installed["wheel"].name.startswith(f"argoctl-{__version__}-")


def test_installed_package_compiles_and_loads_its_datapath(installed):
    out = run_in(installed, """
        import argoctl, argoctl.datapath as dp, argoctl.native as native
        print(argoctl.__file__)
        print(dp.BPF_DIR)
        b = dp.compile_bpf()
        fds = dp.load_programs(b, dp.TC_PROGRAMS)
        print(sorted(fds))
        print(native.version_line())
        b.cleanup()
    """)
    pkg, bpf_dir, progs, native_line = out.strip().splitlines()[-4:]
    venv = str(installed["venv"])
    assert pkg.startswith(venv) and bpf_dir.startswith(venv), out
    assert progs == str(sorted(["steer_eth", "steer_l3", "passive_eth", "passive_l3"]))
    assert native_line == "compiled parts: _echo built, _pathcore built"


def test_installed_cli_validates_and_finds_its_contrib(installed):
    bin_ = installed["venv"] / "bin"
    proc = subprocess.run([str(bin_ / "argoctl"), "validate", str(ROOT / "examples" / "relay.toml")],
                          capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.returncode == 0, proc.stderr
    unit = installed["venv"] / "share" / "argoctl" / "contrib" / "argoctl.service"
    assert "Type=notify" in unit.read_text()


def test_without_a_compiler_it_installs_and_says_what_is_not_built(tmp_path):
    """The compiled parts are optional: a host that cannot build them gets a
    working package (the Python equivalents) and a clear message."""
    env = {**os.environ, "CC": "/bin/false", "LDSHARED": "/bin/false"}
    # a copy of the tree: pip builds in place, and the tree's build/ holds objects
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", "build", ".git", "*.so",
                                                             "__pycache__", "*.egg-info"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-cache-dir",
                           "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                           str(src)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "could not be built" in proc.stdout + proc.stderr
    wheel, = (tmp_path / "dist").glob("argoctl-*.whl")
    assert not any(n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=300)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "zz-project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = subprocess.run([str(venv / "bin" / "argoctl"), "--version"], capture_output=True,
                         text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "_echo NOT built, _pathcore NOT built" in out.stdout
    msg = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "from argoctl import native; print(native.missing_message())"],
                         capture_output=True, text=True, cwd="/", timeout=120).stdout
    assert "not built" in msg and "libssl-dev" in msg
