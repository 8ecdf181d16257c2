"""Which installed kernel the VM boots: one that has what the VM is for."""

from pathlib import Path

from argoctl.lab import vm


def _kernel(root: Path, version: str, dep: list[str], builtin: list[str] = ()) -> None:
    mods = root / version
    (mods / "kernel").mkdir(parents=True)
    (mods / "build").mkdir()
    (mods / "modules.dep").write_text("".join(f"{p}: \n" for p in dep))
    (mods / "modules.builtin").write_text("".join(f"{p}\n" for p in builtin))


FULL = ["kernel/net/ipv4/ip_gre.ko.xz", "kernel/net/ipv6/ip6_gre.ko.xz",
        "kernel/drivers/net/wireguard/wireguard.ko.xz", "kernel/net/sched/sch_netem.ko.xz"]


def test_a_kernel_without_netem_is_not_usable_for_the_vm(tmp_path):
    # a cloud flavour: netem lives in a modules-extra package that is not installed
    _kernel(tmp_path, "6.8.0-1015-aws", FULL[:3])
    _kernel(tmp_path, "6.8.0-49-generic", FULL)
    _kernel(tmp_path, "6.1.0-9-cloud", FULL[1:], builtin=["kernel/net/ipv4/ip_gre.ko"])
    assert not vm._usable("6.8.0-1015-aws", tmp_path)
    assert vm._usable("6.8.0-49-generic", tmp_path)
    assert vm._usable("6.1.0-9-cloud", tmp_path)        # built-in counts
    assert not vm._usable("6.9.9-missing", tmp_path)


def test_the_installed_distribution_kernel_is_found():
    k = vm.find_kernel()
    assert k.vmlinuz.is_file() and set(vm.VM_NEEDS) <= vm._modules_of(k.version)


def test_only_outermost_directories_are_shared_with_the_vm():
    """The checkout and a log directory inside it: one 9p share, the checkout's;
    a directory elsewhere is shared too (`bench peers --log-dir /elsewhere`)."""
    assert vm.rwdir_roots(["/work/repo", "/work/repo/bench-logs/runE", "/srv/logs",
                           "/work/repo-2", "/srv/logs/"]) == \
        ["/srv/logs", "/work/repo", "/work/repo-2"]
