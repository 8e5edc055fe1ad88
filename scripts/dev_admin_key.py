"""In DEV, make sure `.env` holds an admin key: create one, save it, print it once.

Run by `make run` (and `make run_api`, `make run_dev`) so the quick start stays two commands.
Does nothing when ADMIN_API_KEY is already set (environment or `.env`) or outside DEV, where
the key is the operator's to provide.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from shared.settings import generate_admin_key

ROOT = Path(__file__).resolve().parent.parent

ENV_FILE = ROOT / ".env"
_LINE = re.compile(r"^ADMIN_API_KEY=(.*)$", re.MULTILINE)


def _setting(name: str, text: str) -> str:
    if os.environ.get(name):
        return os.environ[name]
    match = re.search(rf"^{name}=(.*)$", text, re.MULTILINE)
    return match.group(1).strip().strip("'\"") if match else ""


def main() -> None:
    if not ENV_FILE.exists():
        shutil.copy(ROOT / ".env.example", ENV_FILE)
    text = ENV_FILE.read_text()
    if _setting("ADMIN_API_KEY", text) or (_setting("ENVIRONMENT", text) or "DEV") != "DEV":
        return
    key = generate_admin_key()
    line = f"ADMIN_API_KEY={key}"
    text = _LINE.sub(line, text, count=1) if _LINE.search(text) else f"{text.rstrip()}\n{line}\n"
    ENV_FILE.write_text(text)
    ENV_FILE.chmod(0o600)
    print(
        "\nCreated a local admin key, saved in .env as ADMIN_API_KEY (shown this once):\n"
        f"  {key}\n"
        "Send it as 'Authorization: Bearer <key>'. In a shell:\n"
        "  ADMIN_KEY=$(sed -n 's/^ADMIN_API_KEY=//p' .env)\n"
    )


if __name__ == "__main__":
    main()
