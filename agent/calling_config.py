"""Config sections for the number's call settings (`call_settings:`) and call buttons (`call_button:`).

Kept apart from `agent.config` so that file only gains two fields. The call settings' values are plain
strings on purpose: `wacall settings push` checks them with Meta's own rules (spec §5) and names the rule,
which says more than a config error would.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CallSettingsConfig(BaseModel):
    """The `calling` settings `wacall settings push` makes Meta hold; None leaves a field as Meta has it."""

    model_config = ConfigDict(extra="forbid")
    status: str | None = None  # ENABLED / DISABLED: the call icon in chat and on the profile
    call_icon_visibility: str | None = None  # DEFAULT / DISABLE_ALL
    restrict_to_user_countries: list[str] | None = None  # ISO-2 codes; [] means no restriction
    callback_permission_status: str | None = None  # ENABLED / DISABLED
    # Push `business_hours` (weekly hours and holidays) as Meta's `call_hours`, so the phone shows the hours
    # wacall enforces. Only when `business_hours` is configured.
    call_hours: bool = True


class CallButtonSettings(BaseModel):
    """How call buttons (spec §6) are sent: free-form inside the customer-service window, else the template."""

    model_config = ConfigDict(extra="forbid")
    body: str = Field("Tap the button below to call us.", min_length=1, max_length=1024)
    display_text: str | None = Field(None, min_length=1, max_length=20)  # Meta's default: "Call Now"
    ttl_minutes: int | None = Field(None, ge=1, le=43200)  # Meta's default: 7 days
    # An approved template with a voice-call button (spec §6.2), used when the window is closed; without one,
    # a button to a user outside the window is refused before Meta is asked.
    template: str | None = None
    template_language: str = "en"
