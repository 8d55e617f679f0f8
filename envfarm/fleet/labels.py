"""Labels and annotations every sandbox pod carries (DESIGN.md: every pod names its owner).

Labels carry what the controller selects on (one label-selected watch for all fleets); annotations
carry what it only reads. Binding state lives on the pod, not only in controller memory, so a
restarted controller rebuilds every claim binding from one list.
"""

from __future__ import annotations

GROUP = "envfarm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FLEET_PLURAL = "sandboxfleets"
CLAIM_PLURAL = "sandboxclaims"

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "envfarm-fleet"
SELECTOR = f"{MANAGED_BY}={MANAGED_BY_VALUE}"  # the one label selector of the pod watch

FLEET = "envfarm.io/fleet"
IMAGE = "envfarm.io/image"
CLAIM = "envfarm.io/claim"  # name of the claim bound to this pod; absent on warm pods
OWNER = "envfarm.io/owner"  # "SandboxFleet.<name>": the run that owns the pod
ROLE = "envfarm.io/role"  # "sandbox" | "prepull"

ANN_USES = "envfarm.io/uses"  # how many claims this pod has served (recycling)
ANN_RESET = "envfarm.io/reset"  # "pending" while a released pod is being reset
ANN_IDLE_SINCE = "envfarm.io/idle-since"  # epoch seconds the pod last became unclaimed
ANN_BOUND_AT = "envfarm.io/bound-at"  # epoch seconds the current claim was bound

FINALIZER = "envfarm.io/fleet-cleanup"


def pod_name(fleet: str, image_key: str, index: int) -> str:
    """Deterministic pod names: a create that is retried, or repeated by a restarted controller,
    hits AlreadyExists instead of making a second pod."""
    return f"{fleet}-{image_key}-{index:05d}"


def parse_index(name: str) -> int | None:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None
