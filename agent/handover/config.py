"""The `handover:` section of the config file: queues and the agents who answer them.

```yaml
handover:
  skills: [billing, spanish]        # optional vocabulary; when given, every skill below must be in it
  queues:
    - name: support
      skills: [billing]             # every call in this queue needs these (flow nodes may add more)
      priority: 10                  # higher is served first
      max_wait_s: 300
      announce_every_s: 30
      offer_timeout_s: 30
      hold_message: Please hold while I connect you to a colleague.
      position_message: You are number {position} in the queue.
      fallback_node: offer_callback # flow node run when max_wait_s passes
  agents:
    - id: ana
      name: Ana
      skills: [billing, spanish]
      queues: all                   # or a list of queue names
  secure_cookies: auto              # Secure console cookie: auto (when https), always (TLS proxy), never
```

Agents' console tokens are never in this file (a config file is easy to commit): agent `ana` signs in with
the token in the environment variable `WACALL_AGENT_TOKEN_ANA` (id upper-cased, `-` becoming `_`), or the
variable named by `token_env`. Only how to look the token up is stored here.

Mistakes are refused at startup with the offending name, because each one otherwise shows up only as a
caller waiting out the full max wait: a skill spelled differently on a queue and on its agents, an agent
listed for a queue that does not exist, two agents whose ids map to the same token variable.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.handover.queues import (
    DEFAULT_HOLD_MESSAGE,
    DEFAULT_POSITION_MESSAGE,
    AgentConfig,
    HandoverDesk,
    QueueConfig,
)

TOKEN_ENV_PREFIX = "WACALL_AGENT_TOKEN_"
_NAME = r"^[a-z0-9][a-z0-9_-]*$"
_SECRET_KEYS = ("token", "password", "secret")


class HandoverConfigError(ValueError):
    """The `handover:` section is invalid; the message says which entry and why."""


def token_env_name(agent_id: str) -> str:
    return TOKEN_ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", agent_id.upper())


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    skills: list[str] = Field(default_factory=list)
    priority: int = 0
    max_wait_s: float = Field(300.0, gt=0)
    # Announcing more often than every few seconds would talk over the hold message itself.
    announce_every_s: float = Field(30.0, ge=5)
    offer_timeout_s: float = Field(30.0, gt=0)
    hold_message: str = Field(DEFAULT_HOLD_MESSAGE, min_length=1)
    position_message: str = Field(DEFAULT_POSITION_MESSAGE, min_length=1)
    fallback_node: str | None = None

    @field_validator("position_message")
    @classmethod
    def _one_placeholder(cls, v: str) -> str:
        # A stray {name} would only fail when the first caller waits; check it now.
        try:
            v.format(position=1)
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"may only use the {{position}} placeholder, got {v!r}") from None
        return v

    def to_queue(self) -> QueueConfig:
        return QueueConfig(
            name=self.name,
            skills=tuple(self.skills),
            priority=self.priority,
            max_wait_s=self.max_wait_s,
            announce_every_s=self.announce_every_s,
            offer_timeout_s=self.offer_timeout_s,
            hold_message=self.hold_message,
            position_message=self.position_message,
            fallback_node=self.fallback_node,
        )


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_NAME)
    name: str = ""
    skills: list[str] = Field(default_factory=list)
    queues: list[str] | Literal["all"] = "all"
    token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            leaked = [key for key in data if str(key).lower() in _SECRET_KEYS]
            if leaked:
                env = data.get("token_env") or token_env_name(str(data.get("id", "<id>")))
                raise ValueError(
                    f"agents' secrets don't belong in the config file ({', '.join(map(str, leaked))}); "
                    f"set the environment variable {env} instead"
                )
        return data

    @property
    def token_variable(self) -> str:
        return self.token_env or token_env_name(self.id)

    def token(self, env: Mapping[str, str] | None = None) -> str | None:
        """Read at each sign-in rather than cached, so a rotated token works without a restart."""
        value = (os.environ if env is None else env).get(self.token_variable, "")
        return value or None

    def to_agent(self) -> AgentConfig:
        return AgentConfig(
            id=self.id,
            name=self.name or self.id,
            skills=frozenset(self.skills),
            queues="all" if self.queues == "all" else frozenset(self.queues),
        )


class HandoverSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    skills: list[str] | None = None
    queues: list[QueueSettings] = Field(default_factory=list)
    agents: list[AgentSettings] = Field(default_factory=list)
    # The console's session cookie is Secure when the request came over https ("auto"); behind a proxy that
    # ends TLS wacall sees http, so say "always" there ("never" only for plain-http test setups).
    secure_cookies: Literal["auto", "always", "never"] = "auto"

    @model_validator(mode="after")
    def _consistent(self) -> HandoverSettings:
        _no_duplicates("queue name", (q.name for q in self.queues))
        _no_duplicates("agent id", (a.id for a in self.agents))
        _no_duplicates("agent token variable", (a.token_variable for a in self.agents))
        queue_names = {q.name for q in self.queues}
        for agent in self.agents:
            unknown = [] if agent.queues == "all" else sorted(set(agent.queues) - queue_names)
            if unknown:
                raise ValueError(f"agent {agent.id!r} serves unknown queue(s) {', '.join(unknown)}")
        if self.skills is not None:
            for owner, skills in self._skill_owners():
                unknown = sorted(set(skills) - set(self.skills))
                if unknown:
                    raise ValueError(f"{owner} uses skill(s) not in `skills`: {', '.join(unknown)}")
        for queue in self.queues:
            if not any(a.to_agent().can_take(queue.name, queue.skills) for a in self.agents):
                needs = f"with skill(s) {', '.join(queue.skills)}" if queue.skills else "at all"
                raise ValueError(f"no agent serves queue {queue.name!r} {needs}: its callers could only time out")
        return self

    def _skill_owners(self) -> list[tuple[str, list[str]]]:
        return [(f"queue {q.name!r}", q.skills) for q in self.queues] + [
            (f"agent {a.id!r}", a.skills) for a in self.agents
        ]

    @property
    def enabled(self) -> bool:
        return bool(self.queues)

    def queue_problems(self, references: Mapping[str, Iterable[str]]) -> list[str]:
        """Check the flow's `handover:` nodes ({queue: extra skills}) against this config, so a flow that
        hands over to a queue nobody answers is caught when the flow loads, not when a caller is waiting."""
        problems: list[str] = []
        queues = {q.name: q for q in self.queues}
        for name, extra in references.items():
            queue = queues.get(name)
            if queue is None:
                problems.append(f"flow hands over to unknown queue {name!r}")
                continue
            needed = set(queue.skills) | set(extra)
            if not any(a.to_agent().can_take(name, needed) for a in self.agents):
                problems.append(f"no agent serving queue {name!r} has all of {', '.join(sorted(needed))}")
        return problems

    def missing_tokens(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Environment variables to set before agents can sign in; `serve` warns with this list."""
        return [a.token_variable for a in self.agents if a.token(env) is None]

    def desk(self) -> HandoverDesk:
        return HandoverDesk([q.to_queue() for q in self.queues], [a.to_agent() for a in self.agents])


def load_handover(data: Mapping[str, Any] | None) -> HandoverSettings:
    """Validate the `handover:` mapping on its own; errors read `handover.agents.1.id: …`."""
    try:
        return HandoverSettings.model_validate(data or {})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(part) for part in ("handover", *err["loc"]))
            message = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise HandoverConfigError("invalid handover config: " + "; ".join(problems)) from exc


def _no_duplicates(what: str, values: Iterable[str]) -> None:
    repeated = sorted(name for name, count in Counter(values).items() if count > 1)
    if repeated:
        raise ValueError(f"duplicate {what}(s): {', '.join(repeated)}")
