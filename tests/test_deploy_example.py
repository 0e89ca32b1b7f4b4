"""deploy/compose.yaml only sets environment variables wacall reads: a misspelt name there is silently
ignored by wacall (a worker without WACALL_WORKER_ID still runs, under another id), so it is caught here."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "deploy" / "compose.yaml"
OURS = re.compile(r"^(WACALL|WHATSAPP)_[A-Z0-9_]+$")


def names_wacall_reads() -> set[str]:
    """Every setting's environment name (`WACALL_<FIELD>`, a section's `WACALL_<SECTION>__<KEY>`, and the older
    names), plus every WACALL_*/WHATSAPP_* string literal in the package's source (where the cluster reads the
    environment itself). Generous (a name in a message counts), never missing one that is read."""
    from agent.config import Settings
    from agent.config_sources import LEGACY_ENV, env_name

    found: set[str] = set(LEGACY_ENV)
    for field, info in Settings.model_fields.items():
        found.add(env_name(field))
        for key in getattr(info.annotation, "model_fields", {}):
            found.add(env_name(f"{field}.{key}"))
    for path in (REPO / "agent").rglob("*.py"):
        found.update(re.findall(r"[\"']((?:WACALL|WHATSAPP)_[A-Z0-9_]+)[\"']", path.read_text(encoding="utf-8")))
    return found


def compose_environment() -> dict[str, set[str]]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    out: dict[str, set[str]] = {}
    for name, service in document["services"].items():
        environment = service.get("environment") or {}
        keys = environment.keys() if isinstance(environment, dict) else (e.split("=", 1)[0] for e in environment)
        out[name] = set(keys)
    return out


def test_every_wacall_name_in_the_compose_file_is_one_wacall_reads() -> None:
    known = names_wacall_reads()
    assert {"WACALL_DATABASE_URL", "WACALL_WORKER_ID", "WHATSAPP_APP_SECRET"} <= known
    unknown = {
        f"{service}: {key}"
        for service, keys in compose_environment().items()
        for key in keys
        if OURS.match(key) and key not in known
    }
    assert not unknown, f"deploy/compose.yaml sets names wacall never reads: {sorted(unknown)}"


def test_every_worker_shares_the_database_and_has_its_own_id_and_port() -> None:
    workers = {
        name: service["environment"]
        for name, service in yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"].items()
        if "WACALL_WORKER_ID" in (service.get("environment") or {})
    }
    assert len(workers) >= 2
    assert len({env["WACALL_DATABASE_URL"] for env in workers.values()}) == 1
    for key in ("WACALL_WORKER_ID", "WACALL_PORT", "WACALL_WORKER_URL"):
        assert len({env[key] for env in workers.values()}) == len(workers), key
