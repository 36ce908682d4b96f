"""What the daemon does to a Deployment: pause, undo, or record an alert, and the Event that says why."""
