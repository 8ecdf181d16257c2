"""Run a command under the distribution kernel, in a virtme-ng VM when needed.

This project's machines run a kernel without GRE, WireGuard or netem; Debian's (or
Ubuntu's) distribution kernel has them as modules. `run()` boots that kernel with
virtme-ng under TCG (no KVM needed), with the host filesystem shared read-only except
the `rwdirs`, prepares the guest (bpffs, cgroup2, debugfs, tunnel/netem/nft modules)
and runs one command in `cwd`, streaming its output and returning its exit code.

`run_where_supported()` runs natively when the running kernel has the features
(probed in a throwaway network namespace) and in the VM otherwise: `make test` uses it
for tests/integration, and `argoctl lab` for the demo.

    python -m argoctl.lab.vm [--kernel VER] [--rwdir DIR]... -- CMD ARGS...

Environment: ARGOCTL_VM=auto|always|never (force the choice), ARGOCTL_VM_KERNEL=VER
(pick a kernel), ARGOCTL_VM_CPUS (2), ARGOCTL_VM_MEMORY (2G). Inside the guest ARGOCTL_IN_VM=1 and ARGOCTL_CGROUP2=<cgroup2 mount>.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

# Loaded before the command so a netns-local request cannot race module autoload;
# failures only warn (a module may be built in).
GUEST_MODULES = (
    "gre", "ip_gre", "ip6_gre", "wireguard", "sch_netem", "veth", "bridge",
    "nf_tables", "nft_ct", "nft_nat", "nft_masq", "nft_chain_nat", "nf_conntrack",
    "nft_fib_inet", "nft_reject_inet", "cls_bpf", "sch_ingress", "act_bpf",
)

# Passed into the guest (virtme-ng does not carry the host environment over).
PASS_ENV = ("CI", "PYTEST_ADDOPTS", "TERM", "COLUMNS")

DEFAULT_CPUS = int(os.environ.get("ARGOCTL_VM_CPUS", "2"))
DEFAULT_MEMORY = os.environ.get("ARGOCTL_VM_MEMORY", "2G")


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path

    @property
    def modules(self) -> Path:
        return Path("/lib/modules") / self.version


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


# What the VM is for: a kernel without these (a cloud flavour that ships netem in an
# extra package, say) is no better than the running one.
VM_NEEDS = ("ip_gre", "ip6_gre", "wireguard", "sch_netem")


def _modules_of(version: str, root: Path = Path("/lib/modules")) -> set[str]:
    """Module names a kernel has, loadable (modules.dep) or built in (modules.builtin)."""
    names = set()
    for index in ("modules.dep", "modules.builtin"):
        try:
            with open(root / version / index) as f:
                for line in f:
                    path = line.split(":", 1)[0].strip()
                    if path:
                        names.add(path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_"))
        except OSError:
            continue
    return names


def _usable(version: str, root: Path = Path("/lib/modules")) -> bool:
    mods = root / version
    return ((mods / "kernel").is_dir() and (mods / "build").exists()
            and set(VM_NEEDS) <= _modules_of(version, root))


def find_kernel(version: str | None = None) -> Kernel:
    """The newest /boot/vmlinuz-* with its modules (VM_NEEDS among them) and headers
    installed, or `version`."""
    version = version or os.environ.get("ARGOCTL_VM_KERNEL") or None
    if version:
        kernel = Kernel(version, Path("/boot") / f"vmlinuz-{version}")
        if not kernel.vmlinuz.is_file() or not _usable(version):
            raise RuntimeError(
                f"kernel {version}: need {kernel.vmlinuz}, {kernel.modules}/kernel with "
                f"{', '.join(VM_NEEDS)}, and {kernel.modules}/build (install its "
                f"linux-image, linux-modules-extra where split, and linux-headers)")
        return kernel
    candidates = sorted(
        (p.name[len("vmlinuz-"):] for p in Path("/boot").glob("vmlinuz-*")),
        key=_version_key, reverse=True)
    for v in candidates:
        if _usable(v):
            return Kernel(v, Path("/boot") / f"vmlinuz-{v}")
    raise RuntimeError(
        "no distribution kernel for the VM: need /boot/vmlinuz-VER with /lib/modules/VER/"
        "kernel and headers (run `make setup`: linux-image-amd64 + linux-headers-amd64)")


def missing_features() -> list[str]:
    """Names of the features (gre, ip6gre, wireguard, netem) the running kernel lacks.

    Probed by creating each inside a throwaway network namespace, never the root one."""
    ns = f"agprobe{os.getpid()}"
    created = subprocess.run(["ip", "netns", "add", ns], capture_output=True)
    if created.returncode != 0:
        return ["netns"]
    checks = {
        "gre": ["ip", "-n", ns, "link", "add", "agp-gre", "type", "gre",
                "local", "192.0.2.1", "remote", "192.0.2.2"],
        "ip6gre": ["ip", "-n", ns, "link", "add", "agp-gre6", "type", "ip6gre",
                   "local", "2001:db8::1", "remote", "2001:db8::2"],
        "wireguard": ["ip", "-n", ns, "link", "add", "agp-wg", "type", "wireguard"],
        "netem": ["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
    }
    try:
        return [name for name, argv in checks.items()
                if subprocess.run(argv, capture_output=True).returncode != 0]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def guest_script(argv: list[str], *, cwd: str, env: dict[str, str], path: str,
                 modules: tuple[str, ...] = GUEST_MODULES) -> str:
    """The script the guest runs: prepare the guest, then `argv` in `cwd`; exits with
    the command's status. It is passed as a file: virtme-ng carries `--exec` on the
    kernel command line, which is too short (2 KiB) for it."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items()))
    return f"""set -u
export PATH={shlex.quote(path)}
{exports}[ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" = bpf_fs ] || mount -t bpf bpf /sys/fs/bpf
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
    ARGOCTL_CGROUP2=/sys/fs/cgroup
else
    ARGOCTL_CGROUP2=/run/argoctl-cgroup2
    mkdir -p "$ARGOCTL_CGROUP2" && mount -t cgroup2 none "$ARGOCTL_CGROUP2"
fi
export ARGOCTL_CGROUP2 ARGOCTL_IN_VM=1
mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
for m in {" ".join(modules)}; do
    modprobe -q "$m" || echo "argoctl-vm: warning: modprobe $m failed" >&2
done
cd {shlex.quote(cwd)} || exit 125
{shlex.join(argv)}
"""


def _bin_dir() -> str:
    """Directory holding vng/virtme-run: the interpreter's (the venv) or PATH."""
    here = os.path.dirname(sys.executable)
    if os.path.exists(os.path.join(here, "vng")):
        return here
    found = shutil.which("vng")
    if not found:
        raise RuntimeError("vng (virtme-ng) not found: run `make setup`")
    return os.path.dirname(found)


def rwdir_roots(dirs) -> list[str]:
    """The absolute directories of `dirs` that are not inside another one of them."""
    out: list[str] = []
    for d in sorted(set(os.path.abspath(d) for d in dirs), key=len):
        if not any(d == r or d.startswith(r.rstrip(os.sep) + os.sep) for r in out):
            out.append(d)
    return out


def vng_argv(script: str, *, kernel: Kernel, cwd: str, rwdirs: list[str],
             cpus: int = DEFAULT_CPUS, memory: str = DEFAULT_MEMORY) -> list[str]:
    """The virtme-ng command line that runs the guest script file `script`."""
    out = [os.path.join(_bin_dir(), "vng"), "--run", str(kernel.vmlinuz), "--disable-kvm",
           "--cpus", str(cpus), "--memory", memory, "--cwd", cwd]
    # A directory inside another one shared is shared already (no second 9p mount).
    for d in rwdir_roots(rwdirs):
        out += ["--rwdir", d]
    return out + ["--exec", f"sh {shlex.quote(script)}"]


def run(argv: list[str], *, kernel: Kernel | None = None, cwd: str | None = None,
        rwdirs: list[str] | tuple[str, ...] = (), env: dict[str, str] | None = None,
        cpus: int = DEFAULT_CPUS, memory: str = DEFAULT_MEMORY,
        timeout: float | None = None) -> int:
    """Boot the distribution kernel, run `argv` as root in `cwd`, return its exit code.

    Output streams to this process's stdout/stderr. `rwdirs` (default: `cwd`) are
    shared read-write; the rest of the host filesystem is a read-only snapshot with
    a tmpfs overlay (writes to /tmp, /var... stay in the guest)."""
    kernel = kernel or find_kernel()
    cwd = os.path.abspath(cwd or os.getcwd())
    if env is None:
        env = {k: v for k, v in os.environ.items()
               if k in PASS_ENV or k.startswith("ARGOCTL_")}
    bindir = _bin_dir()
    path = os.pathsep.join(
        [bindir, "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    # The guest sees the host's filesystem, so a host temp file reaches it.
    with tempfile.TemporaryDirectory(prefix="argoctl-vm-") as tmp:
        script = os.path.join(tmp, "guest.sh")
        with open(script, "w") as f:
            f.write(guest_script(argv, cwd=cwd, env=env, path=path))
        cmd = vng_argv(script, kernel=kernel, cwd=cwd, rwdirs=list(rwdirs) or [cwd],
                       cpus=cpus, memory=memory)
        host_env = dict(os.environ)
        host_env["PATH"] = bindir + os.pathsep + host_env.get("PATH", "")  # vng runs virtme-run
        # Own process group, so a timeout or ^C takes qemu down with vng. Output
        # through pipes: qemu reopens /proc/self/fd/1 with O_TRUNC, which would wipe
        # a log file our stdout is redirected to.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=host_env, cwd=cwd,
                                start_new_session=True)
        relays = [threading.Thread(target=_relay, args=(src, dst), daemon=True)
                  for src, dst in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
        for t in relays:
            t.start()
        try:
            rc = proc.wait(timeout=timeout)
            for t in relays:
                t.join()
            return rc
        except subprocess.TimeoutExpired:
            print(f"argoctl-vm: timed out after {timeout:.0f}s, killing the VM", file=sys.stderr)
            _kill_group(proc)
            return 124
        except BaseException:
            _kill_group(proc)
            raise


def _relay(src, dst) -> None:
    """Copy a child's output to our stream as it comes (bytes, flushed per chunk)."""
    out = getattr(dst, "buffer", dst)
    dst.flush()
    for chunk in iter(lambda: src.read1(65536), b""):
        out.write(chunk)
        out.flush()


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def kernel_label() -> str:
    """How results were measured: in the TCG VM or natively."""
    return "vm-tcg" if os.environ.get("ARGOCTL_IN_VM") else "native"


def use_vm() -> bool:
    """Whether `run_where_supported` would use the VM (ARGOCTL_VM overrides the probe)."""
    mode = os.environ.get("ARGOCTL_VM", "auto")
    if mode not in ("auto", "always", "never"):
        raise RuntimeError(f"ARGOCTL_VM={mode!r}: expected auto, always or never")
    if mode != "auto":
        return mode == "always"
    return bool(missing_features())


def run_where_supported(argv: list[str], *, cwd: str | None = None,
                        rwdirs: list[str] | tuple[str, ...] = (),
                        timeout: float | None = None, **vm_options) -> int:
    """Run `argv` natively if this kernel has GRE, WireGuard and netem, else in the VM."""
    if use_vm():
        return run(argv, cwd=cwd, rwdirs=rwdirs, timeout=timeout, **vm_options)
    try:
        return subprocess.run(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return 124


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m argoctl.lab.vm",
        description="Run a command as root under the distribution kernel (virtme-ng, TCG).")
    parser.add_argument("--kernel", help="kernel version (default: newest usable in /boot)")
    parser.add_argument("--rwdir", action="append", default=[],
                        help="directory shared read-write (repeatable; default: cwd)")
    parser.add_argument("--cwd", help="working directory in the guest (default: cwd)")
    parser.add_argument("--cpus", type=int, default=DEFAULT_CPUS)
    parser.add_argument("--memory", default=DEFAULT_MEMORY)
    parser.add_argument("--timeout", type=float, help="seconds before the VM is killed")
    parser.add_argument("--if-needed", action="store_true",
                        help="run natively when this kernel has gre, wireguard and netem")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ns = parser.parse_args(args)
    command = ns.command[1:] if ns.command[:1] == ["--"] else ns.command
    if not command:
        parser.error("no command given (python -m argoctl.lab.vm -- CMD ARGS...)")
    try:
        if ns.if_needed:
            return run_where_supported(command, cwd=ns.cwd, rwdirs=ns.rwdir, timeout=ns.timeout,
                                       cpus=ns.cpus, memory=ns.memory,
                                       kernel=find_kernel(ns.kernel) if ns.kernel else None)
        return run(command, kernel=find_kernel(ns.kernel), cwd=ns.cwd, rwdirs=ns.rwdir,
                   cpus=ns.cpus, memory=ns.memory, timeout=ns.timeout)
    except RuntimeError as e:
        print(f"argoctl-vm: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
