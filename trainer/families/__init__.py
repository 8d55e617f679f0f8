"""The task families the RL loop trains on, one module each (the protocol and the registry are in
trainer/loop/family.py): `func` completes one line of Python graded by a unit test in the worker's
sandbox; `swe` runs agent episodes on mined SWE tasks in each task's image, graded by SweVerifier; `web` has
the policy (or a replayed / external author) write a page for a prompt with a rubric, verified in a browser
from the recorded session by WebVerifier's scripted or unscripted mode, optionally with a video judge."""
