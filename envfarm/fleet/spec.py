"""Validated views of SandboxFleet and SandboxClaim objects.

The CRD's openAPIV3Schema rejects bad objects at the API server; these models repeat its defaults so
the controller, the simulator and the tests read specs the same way, and so a bad object that
slipped past (e.g. an older CRD) becomes one clear status condition instead of a crash loop.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from envfarm.errors import EnvfarmError


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class ImageEntry(_Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
    image: str = Field(min_length=1)
    warm: int = Field(default=0, ge=0)


class Creation(_Model):
    qps: float = Field(default=50.0, ge=0.1)
    burst: int = Field(default=100, ge=1)
    max_in_flight: int = Field(default=64, ge=1, alias="maxInFlight")


class FailurePolicy(_Model):
    retry_budget: int = Field(default=3, ge=0, alias="retryBudget")
    quarantine_after: int = Field(default=3, ge=1, alias="quarantineAfter")


class Recycle(_Model):
    enabled: bool = True
    max_uses: int = Field(default=20, ge=1, alias="maxUses")


class Prepull(_Model):
    enabled: bool = True


DEFAULT_RESET = "git -C /testbed reset -q --hard && git -C /testbed clean -qfdx && rm -rf /scratch/* /tmp/*"


class Template(_Model):
    command: list[str] | None = None
    workdir: str | None = None
    env: list[dict[str, str]] = Field(default_factory=list)
    resources: dict[str, dict[str, Any]] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    priority_class_name: str | None = Field(default=None, alias="priorityClassName")
    runtime_class_name: str | None = Field(default=None, alias="runtimeClassName")
    reset_command: str = Field(default=DEFAULT_RESET, alias="resetCommand")


class FleetSpec(_Model):
    max_pods: int = Field(default=100, ge=0, alias="maxPods")
    images: list[ImageEntry] = Field(min_length=1)
    template: Template = Field(default_factory=Template)
    ttl_seconds: int = Field(default=0, ge=0, alias="ttlSeconds")
    idle_timeout_seconds: int = Field(default=0, ge=0, alias="idleTimeoutSeconds")
    startup_timeout_seconds: int = Field(default=600, ge=1, alias="startupTimeoutSeconds")
    creation: Creation = Field(default_factory=Creation)
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, alias="failurePolicy")
    recycle: Recycle = Field(default_factory=Recycle)
    prepull: Prepull = Field(default_factory=Prepull)

    def image(self, key: str) -> ImageEntry | None:
        return next((entry for entry in self.images if entry.name == key), None)


class ClaimSpec(_Model):
    fleet: str = Field(min_length=1)
    image: str = Field(min_length=1)
    deadline_seconds: int = Field(default=300, ge=1, alias="deadlineSeconds")
    release: Literal["", "Recycle", "Delete"] = ""


def parse_fleet_spec(obj: dict[str, Any]) -> FleetSpec:
    return _parse(FleetSpec, obj, "SandboxFleet")


def parse_claim_spec(obj: dict[str, Any]) -> ClaimSpec:
    return _parse(ClaimSpec, obj, "SandboxClaim")


def _parse(model: type[_Model], obj: dict[str, Any], kind: str) -> Any:
    name = obj.get("metadata", {}).get("name", "?")
    try:
        return model.model_validate(obj.get("spec") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise EnvfarmError(
            f"{kind} {name}: spec.{where}: {first['msg']}",
            f"correct spec.{where} (see `kubectl explain {kind.lower()}.spec`) and re-apply",
        ) from None
