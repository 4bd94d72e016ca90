"""eval's name for the project's one user-error type (lora/errors.py): one line, exit code 2."""
from __future__ import annotations

from lora.errors import UserError as InputError

__all__ = ["InputError"]
