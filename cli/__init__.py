"""The `distill` command: runs and administers the service (API, workers, migrations, API keys)."""
