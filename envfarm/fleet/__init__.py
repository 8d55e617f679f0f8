"""The Kubernetes environment fleet: CRD types, the controller, its scale simulator and KubernetesSandbox.

Module map (one job each): `labels` (names every pod carries), `spec` (validated CRD specs),
`podspec` (the restricted sandbox pod), `ratelimit` (token bucket + in-flight cap), `expectations`
(no double creates while the watch lags), `cache` (list+watch informer), `failures` (why a pod
failed), `planner` (the pure reconcile decision), `accounting` (success rate and quarantine),
`executor` (apply a plan under the rate budget), `controller` (wires watches, planner, executor,
leader election), `emulator` (server-side behaviour kmock's emulator lacks, plus fault injection),
`sim` (discrete-event cluster model for the benchmark), `metrics`, `manifests` (`check`).
"""
