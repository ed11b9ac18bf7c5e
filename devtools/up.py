"""``make up``: Herald on this machine, with nothing but a clone.

Where a Docker engine answers: ``docker compose up`` of the whole stack. Otherwise RabbitMQ and
PostgreSQL from the machine's own packages (installing Debian's rabbitmq-server when missing)
under ``.herald/``, then ``herald migrate``, a demo tenant, the four services as processes on
ports 8001–8004 and the operators' web console on 8005. Prints copy-paste ``curl`` commands, the
console's address and the demo key to sign in with; Ctrl-C stops everything it started (data in
``.herald/`` is kept for the next run; ``make clean`` removes it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from devtools.infra import LocalInfra, docker_available
from devtools.processes import REPO, ServiceProcess, herald_cli, ingest_env, pipeline_env, port_in_use
from devtools.supervise import Supervisor
from herald.services import COMPONENTS, CONSOLE, SERVICES

#: where make up keeps its broker, database, logs and demo key (HERALD_STATE_DIR: elsewhere, e.g.
#: for a second stack or a test; the `herald` command looks only in the checkout's .herald/)
STATE = Path(os.environ.get("HERALD_STATE_DIR") or REPO / ".herald")
DEMO_FILE = STATE / "demo-tenant.json"
#: what a second shell needs to reach the stack this process started: the `herald` command reads
#: it when HERALD_DATABASE_URL is not set; `set -a; . .herald/env; set +a` gives curl $HERALD_KEY
ENV_FILE = STATE / "env"
#: the console's cookie-signing secret when CONSOLE_SECRET_KEY is not set: generated once, kept
CONSOLE_SECRET_FILE = STATE / "console-secret"


#: what the CLI must share with the services (the secrets only when they were set for `make up`)
_PASSED_ON = (
    "HERALD_ENVIRONMENT",
    "HERALD_DATABASE_URL",
    "HERALD_AMQP_URL",
    "HERALD_SECRET_KEY",
    "HERALD_ENCRYPTION_KEYS",
)


def write_env_file(path: Path, env: dict[str, str], key: str, urls: dict[str, str]) -> None:
    """Write ``KEY=VALUE`` lines (no quoting needed: URLs and keys have no spaces)."""
    lines = [
        "# written by `make up` for the stack it runs; removed when it stops",
        *(f"{k}={env[k]}" for k in _PASSED_ON if k in env),
        f"HERALD_KEY={key}",
        *(f"HERALD_{name.upper()}_URL={url}" for name, url in urls.items()),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def say(text: str) -> None:
    print(f"herald: {text}", flush=True)


def curl_examples(key: str, ports: dict[str, int]) -> str:
    url = {name: f"http://localhost:{port}" for name, port in ports.items()}
    s, sc, i = url["sender"], url["scheduler"], url["ingest"]
    docs = "  ".join(f"{u}/docs" for u in url.values())
    auth = '-H "Authorization: Bearer $HERALD_KEY"'
    json_ct = "-H 'Content-Type: application/json'"
    return f"""
  export HERALD_KEY={key}

  # 1. send a WhatsApp message now (the sandbox provider records it instead of sending)
  curl -s -X POST {s}/v1/messages {auth} {json_ct} \\
       -d '{{"to": "+5511999998888", "text": "Your payment is confirmed", "priority": 9}}'
  # then see it arrive, with its status history (use the id printed above)
  curl -s {s}/v1/sandbox/messages {auth}
  curl -s {s}/v1/messages/<id> {auth}

  # 2. schedule one for 30 seconds from now
  curl -s -X POST {sc}/v1/scheduled-messages {auth} {json_ct} \\
       -d '{{"to": "+5511999998888", "text": "Your table is ready", "send_at": "'$(date -u -d '+30 seconds' +%Y-%m-%dT%H:%M:%SZ)'"}}'
  curl -s {sc}/v1/scheduled-messages {auth}

  # 3. your shop's order system reports a status change; the pipeline tells the customer
  curl -s -X POST {i}/v1/events {auth} {json_ct} \\
       -d '{{"specversion": "1.0", "id": "order-1042-ready", "source": "/my-shop/orders",
            "type": "order.status_changed", "time": "'$(date -u +%Y-%m-%dT%H:%M:%SZ)'",
            "data": {{"order_id": "1042", "status": "ready_for_pickup", "customer_phone": "+5511999998888"}}}}'

  # API docs: {docs}   ·  events: {s}/asyncapi
"""


def console_secret() -> str:
    """CONSOLE_SECRET_KEY, or one generated into .herald/ on first run (sign-ins survive restarts)."""
    if os.environ.get("CONSOLE_SECRET_KEY"):
        return os.environ["CONSOLE_SECRET_KEY"]
    if not CONSOLE_SECRET_FILE.exists():
        STATE.mkdir(exist_ok=True)
        CONSOLE_SECRET_FILE.write_text(secrets.token_hex(32))
        CONSOLE_SECRET_FILE.chmod(0o600)
    return CONSOLE_SECRET_FILE.read_text().strip()


def console_env(ports: dict[str, int]) -> dict[str, str]:
    """What the console needs: the four services' addresses and its cookie secret."""
    env = {f"CONSOLE_{name.upper()}_URL": f"http://127.0.0.1:{ports[name]}" for name in SERVICES}
    env["CONSOLE_SECRET_KEY"] = console_secret()
    return env


def console_banner(key: str, port: int) -> str:
    return f"\n  Web console: http://localhost:{port}\n  Sign in with the demo tenant's API key: {key}\n"


def demo_key(env: dict[str, str], sender_url: str) -> str:
    """The demo tenant's key: reused across runs (kept in .herald/), created on first run."""
    if DEMO_FILE.exists():
        key = json.loads(DEMO_FILE.read_text())["api_key"]
        if (
            httpx.get(
                f"{sender_url}/v1/messages",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {key}"},
                timeout=5,
            ).status_code
            == 200
        ):
            return key
    name = "demo" if not DEMO_FILE.exists() else f"demo-{int(time.time())}"
    created = json.loads(herald_cli(env, "tenant", "create", name, "--json"))
    DEMO_FILE.write_text(json.dumps(created))
    DEMO_FILE.chmod(0o600)
    return created["api_key"]


def run_local() -> int:
    ports = {name: int(os.environ.get(f"{name.upper()}_PORT", s.port)) for name, s in COMPONENTS.items()}
    busy = [f"{n} ({p})" for n, p in ports.items() if port_in_use(p)]
    if busy:
        say(
            f"port(s) in use: {', '.join(busy)}. Is Herald already running? Stop it, or set "
            "INGEST_PORT/SCHEDULER_PORT/PIPELINE_PORT/SENDER_PORT/CONSOLE_PORT."
        )
        return 1
    STATE.mkdir(exist_ok=True)
    infra = LocalInfra(STATE / "infra", durable=True)
    services: list[ServiceProcess] = []
    stopping = False

    def stop_everything(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        # A second Ctrl-C (or `uv run` passing the first one on as well) must not cut the drain
        # short: that left the services running without their broker and database.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping: draining the services (SIGTERM), then the broker and the database …")
        running = [svc for svc in services if svc.proc is not None and svc.proc.poll() is None]
        for svc in running:  # all at once: they drain in parallel
            svc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for svc in running:
            try:
                svc.proc.wait(40)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                svc.proc.kill()  # type: ignore[union-attr]
                svc.proc.wait(5)  # type: ignore[union-attr]
        infra.stop()
        ENV_FILE.unlink(missing_ok=True)
        say("stopped. Data is kept in .herald/ (remove it with `make clean`).")

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # started in the background (nohup, `&`, a supervisor), a process inherits SIGINT ignored;
    # `kill -INT` should still stop Herald as Ctrl-C does
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        say("starting RabbitMQ and PostgreSQL from this machine's packages (no Docker engine here) …")
        urls = infra.start()
        env = {k: v for k, v in os.environ.items()}
        env.update(
            HERALD_ENVIRONMENT="development",
            HERALD_DATABASE_URL=urls.database_url,
            HERALD_AMQP_URL=urls.amqp_url,
            HERALD_LOG_FORMAT=env.get("HERALD_LOG_FORMAT", "json"),
        )
        # an INGEST_SENDER_URL, INGEST_PIPELINE_URL or PIPELINE_SENDER_URL already set wins
        env = {
            **ingest_env(ports["sender"], pipeline_port=ports["pipeline"]),
            **pipeline_env(ports["sender"]),
            **env,
        }
        say(f"database {urls.database_url.split('@')[-1]}, broker {urls.amqp_url.split('@')[-1]}")
        say("migrating …")
        say(herald_cli(env, "migrate").strip().splitlines()[-1])
        logs = STATE / "logs"
        for name in SERVICES:
            svc = ServiceProcess(name, ports[name], env, logs / f"{name}.log", host="0.0.0.0")
            svc.start()
            services.append(svc)
        for svc in services:
            svc.wait_ready(timeout=90)
            say(f"{svc.name:<9} ready on {svc.url}  (log: .herald/logs/{svc.name}.log)")
        key = demo_key(env, services[-1].url)
        console = ServiceProcess(
            CONSOLE.name,
            ports[CONSOLE.name],
            {**env, **console_env(ports)},
            logs / f"{CONSOLE.name}.log",
            host="0.0.0.0",
        )
        console.start()
        services.append(console)
        console.wait_ready(timeout=60)
        say(f"{console.name:<9} ready on {console.url}  (log: .herald/logs/{console.name}.log)")
        write_env_file(ENV_FILE, env, key, {svc.name: f"http://localhost:{svc.port}" for svc in services})
        say("wrote .herald/env: `uv run herald …` in another shell uses this stack")
        print(
            f"\nHerald is up: all four services answer /readyz. Demo tenant key below; try:\n"
            f"{curl_examples(key, {n: p for n, p in ports.items() if n in SERVICES})}"
            f"{console_banner(key, ports[CONSOLE.name])}\n"
            "Press Ctrl-C to stop everything.",
            flush=True,
        )
        # a process that dies is started again and the rest keep running (as Compose's
        # `restart: unless-stopped` and Kubernetes do); one that keeps crashing stops the stack
        supervisor = Supervisor(services, say)
        while True:
            gave_up = supervisor.poll()
            if gave_up is not None:
                svc = next(s for s in services if s.name == gave_up.name)
                say(f"{gave_up}; last lines of its log:\n{svc.log_tail()}\nstopping everything.")
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_everything()


def run_compose() -> int:
    compose = ["docker", "compose"]
    say("a Docker engine answers: running the whole stack with Docker Compose")
    try:
        subprocess.run([*compose, "up", "--build", "--detach", "--wait"], check=True, cwd=REPO)
        STATE.mkdir(exist_ok=True)
        if DEMO_FILE.exists():
            key = json.loads(DEMO_FILE.read_text())["api_key"]
        else:
            out = subprocess.run(
                [*compose, "run", "--rm", "--no-deps", "migrate", "tenant", "create", "demo", "--json"],
                check=True,
                cwd=REPO,
                capture_output=True,
                text=True,
            ).stdout
            DEMO_FILE.write_text(out.strip().splitlines()[-1])
            key = json.loads(DEMO_FILE.read_text())["api_key"]
        print(
            f"\nHerald is up. Demo tenant key below; try:\n{curl_examples(key, {name: s.port for name, s in SERVICES.items()})}"
            f"{console_banner(key, CONSOLE.port)}\nFollowing the logs; press Ctrl-C to stop everything.",
            flush=True,
        )
        subprocess.run([*compose, "logs", "--follow", *COMPONENTS], cwd=REPO)
    except KeyboardInterrupt:
        pass
    finally:
        subprocess.run([*compose, "stop"], cwd=REPO)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make up", description=__doc__)
    parser.add_argument(
        "--no-docker", action="store_true", help="use the machine's own RabbitMQ and PostgreSQL"
    )
    args = parser.parse_args(argv)
    if not args.no_docker and shutil.which("docker") and docker_available():
        return run_compose()
    return run_local()


if __name__ == "__main__":
    sys.exit(main())
