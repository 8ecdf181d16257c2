"""[fleet] checks (docs/config.md): the section's keys, types and ranges as every
other section, server URLs, bucket names, and the credentials and TLS files read
as the agent will read them (mode, owner, content; never echoed)."""

from __future__ import annotations

from typing import Optional
from urllib.parse import urlsplit

from argoctl import keys
from argoctl.config.model import Fleet
from argoctl.config.rules import _BUCKET_RE, _FLEET_KEYS, _FLEET_RULES, FLEET_WATCH

SCHEMES = ("nats", "tls")


def server_problem(url: str) -> str:
    """Why a server URL is unusable ("" if fine). Never echoes a password."""
    try:
        u = urlsplit(url if "://" in url else f"nats://{url}")
        port = u.port
    except ValueError:
        return "is not a URL like nats://192.0.2.10:4222"
    if u.scheme not in SCHEMES:
        return f"has scheme {u.scheme!r}: use nats:// or tls://"
    if u.username is not None or u.password is not None:
        return "holds credentials: put them in credentials_file (mode 0600) instead"
    if not u.hostname:
        return "has no host"
    if port is None:
        return "has no port (NATS clients listen on 4222 by default: write it)"
    if u.path not in ("", "/") or u.query or u.fragment:
        return "has a path or query: only scheme://host:port"
    return ""


def check_fleet(ck, doc: dict) -> Optional[Fleet]:
    """The [fleet] table as a Fleet, or None (absent, or problems recorded on `ck`,
    the loader's _Checker)."""
    t = ck.table(doc, "fleet")
    if t is None:
        return None
    p = ("fleet",)
    ck.unknown_keys(t, p, _FLEET_KEYS, "[fleet]")
    servers = []
    items = ck.get_list(t, p, "servers", "str", required=True)
    if items is not None and not items and "servers" in t:
        ck.err(p + ("servers",), "fleet.servers: empty", 'list at least one: ["nats://192.0.2.10:4222"]')
    for i, url in items or []:
        problem = server_problem(url)
        if problem:
            shown = "a URL" if "@" in url else repr(url)
            ck.err(p + ("servers", i), f"fleet.servers[{i}]: {shown} {problem}")
        else:
            servers.append(url if "://" in url else f"nats://{url}")
    ck.duplicates([(p + ("servers", i), u) for i, u in items or []], "server")
    values = {}
    for key, rule in _FLEET_RULES.items():
        v = ck.get(t, p, key, rule[0])
        if v is None:
            continue
        if len(rule) > 1 and not ck.in_range(p + (key,), v, rule[1], rule[2]):
            continue
        values[key] = float(v) if rule[0] == "float" else v
    if "watch" in values and values["watch"] not in FLEET_WATCH:
        ck.err(p + ("watch",), f"fleet.watch: {values['watch']!r} is not a choice",
               'one of "all" (every host\'s legs) or "peers" (only the peers\' legs)')
        del values["watch"]
    for key in ("members_bucket", "legs_bucket"):
        if key in values and not _BUCKET_RE.match(values[key]):
            ck.err(p + (key,), f"fleet.{key}: {values[key]!r} is not a bucket name",
                   "letters, digits, '_' and '-', at most 64")
            del values[key]
    if (values.get("members_bucket", Fleet.members_bucket)
            == values.get("legs_bucket", Fleet.legs_bucket)):
        ck.err(p + ("legs_bucket",), "fleet.legs_bucket: the same bucket as members_bucket",
               "two buckets: argoctl_members and argoctl_legs")
    interval = values.get("publish_interval_ms", Fleet.publish_interval_ms)
    ttl = values.get("ttl_s", Fleet.ttl_s)
    if ttl * 1000 < 3 * interval:
        ck.err(p + ("ttl_s" if "ttl_s" in t else "publish_interval_ms",),
               f"fleet.ttl_s: {ttl:g} s is less than 3 x publish_interval_ms ({interval} ms)",
               "records are refreshed every ttl_s / 3 at the latest, and must be "
               "written more often than that")
    for key in ("credentials_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
        if values.get(key):
            values[key] = ck.resolve(values[key])
    if values.get("credentials_file"):
        from argoctl.fleet.credentials import read_credentials
        try:
            read_credentials(values["credentials_file"])
        except keys.KeyFileError as e:
            ck.err(p + ("credentials_file",), e.message, e.hint)
    if values.get("tls_key_file"):
        try:
            keys.read_secret_file(values["tls_key_file"], "TLS key file",
                                  "write the client key there, mode 0600")
        except keys.KeyFileError as e:
            ck.err(p + ("tls_key_file",), e.message, e.hint)
    if bool(values.get("tls_cert_file")) != bool(values.get("tls_key_file")):
        missing = "tls_key_file" if values.get("tls_cert_file") else "tls_cert_file"
        ck.err(p, f"fleet: tls_cert_file and tls_key_file go together: {missing} is missing")
    for key in ("tls_ca_file", "tls_cert_file"):
        f = values.get(key)
        if f:
            try:
                with open(f, "rb"):
                    pass
            except OSError as e:
                ck.err(p + (key,), f"fleet.{key}: cannot read {f}: {e.strerror}")
    if ck.problems or not servers:
        return None
    return Fleet(servers=tuple(servers), **values)
