"""Where the repository and its demo configuration are, for tests that read them."""

from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPOSITORY / "config" / "demo.yaml"
STANDARD_MAPPINGS = REPOSITORY / "config" / "standard"
