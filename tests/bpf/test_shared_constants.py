"""Every constant the compiled parts share with Python, compared by value (the
structs' sizes and offsets are in test_layout.py): bpf/include/consts.h against
maps.py, datapath.py and names.py (compiled with gcc); argoctl/_pathcore.c against
estimator.py and pathscore.py, argoctl/_echo.c against mac.py and probe/ (the
modules' CONSTANTS); and the times _pathcore is handed against Policy.timing."""

import dataclasses
import subprocess

import pytest

from argoctl import _echo, _pathcore, datapath, estimator, mac, maps, names, pathscore
from argoctl.config import Policy
from argoctl.probe import channels, results

BPF_CONSTS = ("ARGOCTL_ABI", "MAX_PATHS", "MAX_PATH_IDS", "MAX_DESTS", "MAX_PREFIXES_V4",
              "MAX_PREFIXES_V6", "MAX_FLOWS", "PATH_DOWN", "PATH_UP", "FLOW_SYN_RETRANS",
              "SETTING_REROUTE", "MAX_REROUTES", "PIN_IDLE_NS", "PIN_TOUCH_NS")


@pytest.fixture(scope="module")
def bpf_consts(tmp_path_factory):
    src = ('#include <stdio.h>\n#include "consts.h"\nint main(void) {\n'
           + "".join(f'printf("{c} %lld\\n", (long long)({c}));\n' for c in BPF_CONSTS)
           + "return 0;\n}\n")
    d = tmp_path_factory.mktemp("consts")
    (d / "consts.c").write_text(src)
    subprocess.run(["gcc", "-Wall", "-Werror", "-I", str(datapath.BPF_DIR / "include"),
                    "-o", str(d / "consts"), str(d / "consts.c")], check=True)
    out = subprocess.run([str(d / "consts")], check=True, capture_output=True, text=True).stdout
    return {l.split()[0]: int(l.split()[1]) for l in out.splitlines()}


def test_bpf_constants_match_python(bpf_consts):
    sizes = datapath.Sizes()
    assert bpf_consts == {
        "ARGOCTL_ABI": maps.ABI, "MAX_PATHS": maps.MAX_PATHS, "MAX_PATH_IDS": maps.MAX_PATH_IDS,
        "MAX_DESTS": sizes.max_dests, "MAX_PREFIXES_V4": sizes.max_prefixes_v4,
        "MAX_PREFIXES_V6": sizes.max_prefixes_v6, "MAX_FLOWS": sizes.max_flows,
        "PATH_DOWN": maps.PATH_DOWN, "PATH_UP": maps.PATH_UP,
        "FLOW_SYN_RETRANS": maps.FLOW_SYN_RETRANS, "SETTING_REROUTE": maps.SETTING_REROUTE,
        "MAX_REROUTES": maps.MAX_REROUTES, "PIN_IDLE_NS": maps.PIN_IDLE_NS,
        "PIN_TOUCH_NS": maps.PIN_TOUCH_NS}
    assert names.MAX_PATH_ID < bpf_consts["MAX_PATH_IDS"]      # every path id has its stats slot
    # the direct path's mark field value (all ones) is an index too
    assert (names.DEFAULT_FWMARK_MASK >> names.mark_shift(names.DEFAULT_FWMARK_MASK)) \
        < bpf_consts["MAX_PATH_IDS"]


def test_pathcore_constants_match_the_estimator():
    assert _pathcore.CONSTANTS == {
        "RTT_BETA": estimator.RTT_BETA, "JITTER_GAIN": estimator.JITTER_GAIN,
        "PASSIVE_WEIGHT": estimator.PASSIVE_WEIGHT,
        "PASSIVE_MIN_SYNS": estimator.PASSIVE_MIN_SYNS, "RECENT": estimator.RECENT,
        "SYN_RTO_S": estimator.SYN_RTO_S, "PASSIVE_FORGET_S": estimator.PASSIVE_FORGET_S,
        "SNAP_FIELDS": len(dataclasses.fields(estimator.Snapshot)),
        "SCORE_FIELDS": len(dataclasses.fields(pathscore.PathScore))}


def test_echo_constants_match_the_wire_format_and_the_prober():
    assert _echo.CONSTANTS == {
        "SIZE": mac.SIZE, "MAC_OFFSET": mac.MAC_OFFSET, "MAC_LEN": mac.MAC_LEN,
        "VERSION": mac.VERSION, "REQUEST": mac.REQUEST, "REPLY": mac.REPLY,
        "DONE_WINDOW": results._DONE_WINDOW,
        "CODE_REPLY": channels.RESULT_REPLY, "CODE_TIMEOUT": channels.RESULT_TIMEOUT,
        "CODE_SEND_ERROR": channels.RESULT_SEND_ERROR,
        "CODE_CHANGED": channels.RESULT_CHANGED}
    assert mac.MAC_OFFSET + mac.MAC_LEN <= mac.SIZE


@pytest.mark.parametrize("policy", [
    Policy(),
    Policy(probe_interval_ms=200, probe_timeout_ms=500, detect_multiplier=3, hold_down_s=4.0),
    Policy(probe_interval_ms=50, probe_jitter=0.3, probe_timeout_ms=2000, detect_multiplier=5),
])
def test_the_compiled_path_state_is_handed_policy_timing(policy):
    t = policy.timing
    assert t.interval_s == policy.probe_interval_ms / 1000
    assert t.detect_s == policy.detect_multiplier * t.interval_s
    assert t.fast_interval_s == t.interval_s / t.fast_divisor
    assert t.suspect_after_s <= t.detect_s
    native = _pathcore.PathState(policy, pathscore.Tuning(), 0.0)
    py = estimator.Estimator(policy, 0.0)
    assert (native.interval, native.detect, native.suspect_after) \
        == (py.interval, py.detect, py.suspect_after) \
        == (t.interval_s, t.detect_s, t.suspect_after_s)
