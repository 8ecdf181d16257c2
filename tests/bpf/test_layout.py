"""Every struct shared between bpf/include/structs.h and argoctl/maps.py has
the same size and field offsets: compiled with gcc, compared to ctypes."""

import ctypes
import subprocess

import pytest

from argoctl import datapath, maps


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    lines = []
    for cname, ctype in maps.SHARED_STRUCTS.items():
        lines.append(f'printf("{cname} size %zu\\n", sizeof(struct {cname}));')
        for field, _ in ctype._fields_:
            lines.append(f'printf("{cname} {field} %zu\\n", offsetof(struct {cname}, {field}));')
    src = ("#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
           '#include "consts.h"\n#include "structs.h"\n'
           "int main(void) {\n" + "\n".join(lines) + "\nreturn 0;\n}\n")
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text(src)
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(datapath.BPF_DIR / "include"),
                    "-o", str(d / "layout"), str(d / "layout.c")], check=True)
    out = subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout
    return {tuple(l.split()[:2]): int(l.split()[2]) for l in out.splitlines()}


@pytest.mark.parametrize("cname", sorted(maps.SHARED_STRUCTS))
def test_struct_layout_matches(c_layout, cname):
    ctype = maps.SHARED_STRUCTS[cname]
    assert c_layout[(cname, "size")] == ctypes.sizeof(ctype)
    for field, _ in ctype._fields_:
        assert c_layout[(cname, field)] == getattr(ctype, field).offset, field


def test_bulk_encoder_matches_ctypes():
    ps = [maps.Path(path_id=3, mark=0x30000, weight=7, up=True),
          maps.Path(path_id=255, mark=0xFF0000, weight=65535, up=False)]
    c = maps.PathSet(generation=9, count=2)
    for i, p in enumerate(ps):
        c.paths[i] = maps.PathEntry(mark=p.mark, weight=p.weight,
                                    state=maps.PATH_UP if p.up else maps.PATH_DOWN, path_id=p.path_id)
    assert maps.encode_pathset(ps, generation=9) == bytes(c)
    assert maps.decode_pathset(bytes(c)) == (9, ps)
    assert maps.encode_prefix("198.51.100.0/24") == (4, bytes(maps.LpmV4Key(24, (198, 51, 100, 0))))


def test_abi_constant_matches_c():
    consts = (datapath.BPF_DIR / "include" / "consts.h").read_text()
    assert f"#define ARGOCTL_ABI {maps.ABI}\n" in consts
    assert f"#define MAX_PATHS {maps.MAX_PATHS} " in consts
