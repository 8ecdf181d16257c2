"""Lab scenarios: timed impairment steps (argoctl/lab/scenarios/*.toml)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass


from argoctl.lab import topo as netns_topo


# -- scenarios (argoctl/lab/scenarios/*.toml) -----------------------------------------

SCENARIO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios")
DIRECTIONS = ("a->b", "b->a", "both")
_STEP_KEYS = {"at", "link", "direction", "delay", "jitter", "loss", "blackhole", "clear"}


@dataclass(frozen=True)
class Step:
    """At `at` seconds: impair (or restore) the link between a and b."""
    at: float
    a: str
    b: str
    direction: str = "both"
    delay: float = 0.0          # ms, each way
    jitter: float = 0.0         # ms
    loss: float = 0.0           # percent
    blackhole: bool = False
    clear: bool = False

    def describe(self) -> str:
        arrow = {"a->b": "->", "b->a": "<-", "both": "<->"}[self.direction]
        where = f"{self.a}{arrow}{self.b}"
        if self.clear:
            return f"{where} restored"
        if self.blackhole:
            return f"{where} blackholed"
        parts = [f"+{self.delay:g} ms" + (f" +-{self.jitter:g}" if self.jitter else "")] \
            if self.delay else []
        parts += [f"{self.loss:g}% loss"] if self.loss else []
        return f"{where} " + (", ".join(parts) or "unimpaired")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    duration: float
    steps: tuple[Step, ...]
    path: str = ""
    fleet: bool = False         # needs fleet mode: the relays' agents and a nats-server


def scenario_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(SCENARIO_DIR) if f.endswith(".toml"))


def load_scenario(name: str) -> Scenario:
    """A shipped scenario by name, or a scenario file by path. ValueError says what is wrong."""
    path = name if os.sep in name or name.endswith(".toml") else \
        os.path.join(SCENARIO_DIR, f"{name}.toml")
    if not os.path.exists(path):
        raise ValueError(f"no scenario {name!r} (shipped: {', '.join(scenario_names())})")
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: {e}") from None
    return parse_scenario(doc, path)


def parse_scenario(doc: dict, path: str = "<scenario>") -> Scenario:
    known_links = {frozenset(p) for p in netns_topo.MESH_PAIRS} | {frozenset(("edge", "client"))}
    unknown = set(doc) - {"name", "description", "duration", "fleet", "step"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    if not isinstance(doc.get("fleet", False), bool):
        raise ValueError(f"{path}: fleet must be true or false")
    duration = doc.get("duration")
    if not isinstance(duration, (int, float)) or duration <= 0:
        raise ValueError(f"{path}: duration must be a positive number of seconds")
    steps = []
    for i, s in enumerate(doc.get("step", []), 1):
        where = f"{path}: step {i}"
        unknown = set(s) - _STEP_KEYS
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(sorted(_STEP_KEYS))})")
        link = s.get("link")
        if not (isinstance(link, list) and len(link) == 2 and frozenset(link) in known_links):
            raise ValueError(f"{where}: link must name two linked lab hosts, e.g. "
                             f"[\"edge\", \"origin\"] (got {link!r})")
        at = s.get("at")
        if not isinstance(at, (int, float)) or not 0 <= at <= duration:
            raise ValueError(f"{where}: at must be a number of seconds within the duration")
        step = Step(float(at), link[0], link[1], s.get("direction", "both"),
                    float(s.get("delay", 0)), float(s.get("jitter", 0)), float(s.get("loss", 0)),
                    bool(s.get("blackhole", False)), bool(s.get("clear", False)))
        if step.direction not in DIRECTIONS:
            raise ValueError(f"{where}: direction must be one of {', '.join(DIRECTIONS)}")
        if step.jitter and not step.delay:
            raise ValueError(f"{where}: jitter needs delay")
        if not 0 <= step.loss <= 100 or step.delay < 0 or step.jitter < 0:
            raise ValueError(f"{where}: delay/jitter must be >= 0 and loss within 0..100")
        steps.append(step)
    return Scenario(str(doc.get("name", os.path.basename(path)[:-5])),
                    str(doc.get("description", "")), float(duration),
                    tuple(sorted(steps, key=lambda st: st.at)), path, doc.get("fleet", False))


