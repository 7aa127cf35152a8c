"""``EMOSTREAM_CALLS__*``: which speakers of a call are analysed, how long a call's summary
is kept, and where it is sent when the call ends.

The EU AI Act (Regulation 2024/1689) Art. 5(1)(f) prohibits emotion recognition of people
at their workplace (but for medical or safety reasons): a contact centre may not analyse
its own agents. So ``agent`` is not analysed unless an operator says so, and then the
server warns at start (docs/RESPONSIBLE-USE.md). Art. 50(3) requires telling the people who
are analysed, whatever this setting says.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from emostream.fields import CommaList

ROLES = ("customer", "agent", "unknown")


class CallsConfig(BaseModel):
    analyse_roles: CommaList = Field(
        default_factory=lambda: ["customer", "unknown"],
        description="roles whose voice is analysed (customer, agent, unknown); a track of "
        "another role is not decoded or classified and gets no voice messages. agent: "
        "prohibited in the EU workplace, Art. 5(1)(f) AI Act (docs/RESPONSIBLE-USE.md)",
    )
    keep_s: float = Field(
        default=3600.0, ge=0, description="a call's summary is served this long after it ends"
    )
    webhook_url: str = Field(
        default="", description="POST each call's summary here when it ends; empty = none"
    )
    webhook_secret: str = Field(
        default="",
        description="HMAC-SHA256 key of the webhook's X-Emostream-Signature header; empty = "
        "unsigned",
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0, description="one delivery attempt")
    webhook_retry_s: float = Field(
        default=300.0, ge=0, description="retry a failed delivery with backoff for this long"
    )

    @field_validator("analyse_roles")
    @classmethod
    def _known(cls, roles: list[str]) -> list[str]:
        unknown = [r for r in roles if r not in ROLES]
        if unknown:
            raise ValueError(f"unknown role(s) {unknown}: use {', '.join(ROLES)}")
        return roles

    def analysed(self, role: str) -> bool:
        return role in self.analyse_roles

    @property
    def policy(self) -> dict[str, object]:
        """What ``/readyz`` says of the role policy."""
        return {
            "analyse_roles": list(self.analyse_roles),
            "agents_analysed": self.analysed("agent"),
            "rule": "EU AI Act Art. 5(1)(f): no emotion recognition of workers; "
            "Art. 50(3): tell the people analysed",
        }
