"""Where rollout state comes from: the Kubernetes API (live) and replays (backtests)."""
