"""Running the service unattended: cron schedules (server.operations.scheduler), alert
delivery (alerts), degradation checks (degradation), retention (retention) and Prometheus
metrics (metrics). Each is a loop the App starts on every server; what must happen once
across servers is decided in PostgreSQL (row locks), never by which server runs it."""
