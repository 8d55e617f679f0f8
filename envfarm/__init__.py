"""envfarm core: configuration, the store, sandboxes, images, the fleet controller, the reward stream, the CLI."""

__version__ = "0.1.0"
