"""What the daemon thinks, for people: the status board (pure), its JSON API, HTML pages with charts, reports."""
