"""The Kubernetes environment fleet: CRD types, the controller, and its command line.

Module map (one job each): `labels` (names every pod carries), `spec` (validated CRD specs),
`podspec` (the restricted sandbox pod), `ratelimit` (token bucket + in-flight cap), `expectations`
(no double creates while the watch lags), `cache` (list+watch informer; the `Cache` interface the
controller reads through), `views` (compact pod and claim views), `failures` (why a pod failed),
`planner` (the reconcile decision and its explicit `PlannerMemory`), `accounting` (success rate and
quarantine), `executor` (apply a plan under the rate budget), `api` (the official client's calls),
`leader` (Lease election), `prepull` (image pre-pull DaemonSets), `controller` (wires caches,
planner, executor, leader election; caches and executor are injectable), `metrics`, `manifests`
(`check`: render and validate k8s/), `cli` (`envfarm fleet controller | status | manifests check`).

Test tooling is not here: the API emulator (kmock-based) and the discrete-event simulator live in
`envfarm.testing` (`kube_emulator`, `fleet_sim`), installed with `pip install 'envfarm[test]'`, so
nothing a controller or a worker imports pulls them in. The pod side a worker uses (`KubernetesSandbox`,
the claim client) is in `envfarm.sandbox` (`kubernetes`, `claim`).
"""
