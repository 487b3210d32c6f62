"""Everything runs offline: set before any test module imports huggingface_hub (it reads this at import)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
