"""`python -m appliance.tools VERB ...`: the file verbs without the rest of `pacs`."""

from __future__ import annotations

import sys

from appliance.tools.file_cli import main

if __name__ == "__main__":
    sys.exit(main())
