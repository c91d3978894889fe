"""`python -m appliance` is the `pacs` command."""

from appliance.cli import main

raise SystemExit(main())
