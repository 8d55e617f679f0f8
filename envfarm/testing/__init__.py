"""Test tooling for envfarm's Kubernetes fleet, kept out of the runtime package (as `kopf.testing` is).

Why here and not in `envfarm/fleet/`: nothing a controller, a trainer or a miner runs on a cluster may
import an API emulator or a simulator, and kmock (the emulator's base) is only in the `test` extra. Why
a package and not `tests/`: two consumers share it, the test suite (tests/fleet) and the scale
benchmark (bench/fleet.py), and users writing their own controller tests can import it too.

Modules (one job each):
- `kube_objects`: pure helpers with no third-party needs: JSON merge patch (RFC 7386), label selector
  matching, and the pod statuses a kubelet reports (running, image-pull failure).
- `kube_emulator`: `FleetEmulator`, kmock's KubernetesEmulator with the server-side behaviour the
  controller relies on (versions, conflicts, watches and 410, status subresource, finalizers, garbage
  collection) plus fault injection; `EmulatedCluster` serves it over loopback HTTP; `FakeKubelet`.
  Needs `pip install 'envfarm[test]'`; without kmock its import raises one EnvfarmError saying so.
- `fleet_sim`: a discrete-event model of an API server and a cluster that drives the real
  `FleetController` through its injected caches and executor (no kmock needed).
"""
