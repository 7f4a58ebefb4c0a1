"""`keel dev`: run every service of a repository locally, with readable logs, until Ctrl-C.

Services are the folders under `services/` whose pyproject.toml says
`[tool.keel] serves = ["acme.orders.v1.OrderService"]`; each runs as `python -m <package>` (its
`src/` first on the import path, then gen/) on the port the registry gives its first service,
metrics on that port + 1000, its own REST routes (`google.api.http`, KEEL_REST_PORT) on a port
chosen free once per run, console logs prefixed with the service's name; the REST gateway, one
entry point for all of them, starts once they all serve. Each service gets its own state
folder, `<state>/<name>` (KEEL_STATE_DIR: its SQLite database lives there), and
KEEL_MIGRATE=true, so it applies its pending migrations before it serves. A NATS broker with
JetStream (the bundled nats-server) starts first, on a free port, storing in `<state>/nats` so
that events outlive keel dev; every service gets its address (KEEL_NATS_URL). Ctrl-C (or
SIGTERM) drains and stops them all, the broker last.

Modules: `services` (discovery, each child's command and environment), `child` (a restartable
child process, its output relayed), `session` (startup order and shutdown), `watch`,
`changes` and `regen` (`--watch`: saved files reload what they touch), `spare` (a warm
process for the next restart). Nothing is imported here, so `python -m keel.dev.spare` starts
light: `keel.dev.session.run` is the entry point.
"""
