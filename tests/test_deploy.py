"""The Docker stack in deploy/ agrees with the configuration the tests run.

The images are built and the stack run under SIP load by deploy/test-stack,
the step of `make test` after pytest (it needs the ports the Asterisk sandbox
holds during this session).  Checked here: the stack's router.yaml loads and validates the IVR
flows; it reaches AMI and FastAGI where asterisk_conf/ puts them; every agent
is an endpoint of pjsip.conf; the Asterisk container's start-up rendering
(deploy/asterisk/render-conf) really edits the lines asterisk_conf/ ships;
the published RTP ports are rtp.conf's range; the compose file interpolates
only documented variables and `docker compose config` accepts it; and the
router, pointed at a database by ACD_DATABASE_URL as compose does, migrates it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import yaml

from router.config import ConfigError, check_config, load_config
from router.ivr import check_flows

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
ROUTER_YAML = DEPLOY / "router.yaml"
COMPOSE = DEPLOY / "docker-compose.yml"
ASTERISK_CONF = REPO / "asterisk_conf"
RENDER_CONF = DEPLOY / "asterisk" / "render-conf"
SECRET = "test-secret-0123456789abcdef"
SANDBOX_SECRET = "acd-router-sandbox"


def conf_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """An Asterisk .conf file as section -> option -> values, templates applied.

    A header `[name](tmpl,...)` copies the options of the templates first; a
    name that appears again (pjsip.conf's endpoint, auth, aor of one id) adds
    to the same section, which is enough to ask what types an id has."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        header = re.fullmatch(r"\[([^\]]+)\](?:\(([^)]*)\))?", line)
        if header:
            current = sections.setdefault(header[1], {})
            for template in filter(None, (header[2] or "").split(",")):
                if template.strip() != "!":
                    for key, values in sections.get(template.strip(), {}).items():
                        current.setdefault(key, []).extend(values)
        elif "=" in line and current is not None:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.lstrip(">").strip())
    return sections


def deploy_environ(**extra: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items()
               if key not in ("ACD_AMI_SECRET", "ACD_DATABASE_URL")}
    environ["ACD_AMI_SECRET"] = SECRET
    environ["PYTHONPATH"] = str(REPO)
    environ.update(extra)
    return environ


# ---- router.yaml ----------------------------------------------------------------------------

def test_router_yaml_loads_with_every_queue_served():
    centre, problems = check_config(ROUTER_YAML, environ={"ACD_AMI_SECRET": SECRET})
    assert centre is not None, [str(p) for p in problems]
    assert [str(p) for p in problems] == []          # no warnings either: each queue has an agent
    sample = load_config(REPO / "router" / "samples" / "centre.yaml", environ={})
    assert set(centre.queues) == set(sample.queues)
    assert set(centre.skills) == set(sample.skills)
    assert {agent.endpoint for agent in centre.agents.values()} == {"PJSIP/1001", "PJSIP/1002"}
    assert centre.ami is not None and centre.ami.secret == SECRET
    assert centre.flows == "/etc/acd-router/ivr_flows"


def test_router_yaml_needs_the_ami_secret_from_the_environment():
    with pytest.raises(ConfigError, match="ACD_AMI_SECRET"):
        load_config(ROUTER_YAML, environ={})


def test_database_url_from_the_environment_wins():
    url = "postgresql://acd_router:pw@postgres:5432/acd_router"
    centre = load_config(ROUTER_YAML, environ={"ACD_AMI_SECRET": SECRET, "ACD_DATABASE_URL": url})
    assert centre.database.dsn == url
    assert centre.database.data_dir == "/var/lib/acd-router/pgdata"


def test_ivr_flows_validate_against_the_stack_config():
    centre = load_config(ROUTER_YAML, environ={"ACD_AMI_SECRET": SECRET})
    flowset, problems = check_flows(REPO / "ivr_flows", known_queues=centre.queues,
                                    schedules=centre.schedules, known_skills=centre.skills)
    assert flowset is not None, [str(p) for p in problems]
    result = subprocess.run(
        [sys.executable, "-m", "router", "flows", "validate", "--config", str(ROUTER_YAML),
         str(REPO / "ivr_flows")],
        cwd=REPO, env=deploy_environ(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_ami_and_fastagi_addresses_are_the_ones_asterisk_conf_uses():
    centre = load_config(ROUTER_YAML, environ={"ACD_AMI_SECRET": SECRET})
    manager = conf_sections(ASTERISK_CONF / "manager.conf")
    assert centre.ami is not None
    assert manager["general"]["bindaddr"] == [centre.ami.host]
    assert manager["general"]["port"] == [str(centre.ami.port)]
    assert centre.ami.username in manager
    globals_ = conf_sections(ASTERISK_CONF / "extensions.conf")["globals"]
    assert globals_["ROUTER_AGI"] == [f"agi://{centre.agi.host}:{centre.agi.port}"]


def test_every_agent_is_a_pjsip_endpoint_with_auth_and_aor():
    centre = load_config(ROUTER_YAML, environ={"ACD_AMI_SECRET": SECRET})
    pjsip = conf_sections(ASTERISK_CONF / "pjsip.conf")
    for agent in centre.agents.values():
        technology, _, name = agent.endpoint.partition("/")
        assert technology == "PJSIP"
        assert set(pjsip[name]["type"]) == {"endpoint", "auth", "aor"}, agent.endpoint


# ---- the Asterisk container's configuration -------------------------------------------------

def render(tmp_path: Path, local: Path | None = None, **environ: str) -> subprocess.CompletedProcess:
    """Run render-conf as the image does: asterisk_conf/ plus deploy's rtp.conf as the source."""
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    for conf in ASTERISK_CONF.glob("*.conf"):
        shutil.copy(conf, source)
    shutil.copy(DEPLOY / "asterisk" / "rtp.conf", source)
    env = {"PATH": os.environ["PATH"], **environ}
    return subprocess.run(["bash", str(RENDER_CONF), str(source), str(local or tmp_path / "none"),
                           str(tmp_path / "etc")], env=env, capture_output=True, text=True, timeout=60)


def test_render_sets_the_secret_and_the_sip_transport_and_changes_nothing_else(tmp_path):
    result = render(tmp_path, ACD_AMI_SECRET=SECRET, ACD_SIP_EXTERNAL_ADDRESS="203.0.113.7")
    assert result.returncode == 0, result.stderr
    etc = tmp_path / "etc"
    manager = conf_sections(etc / "manager.conf")
    assert manager["acd-router"]["secret"] == [SECRET]
    transport = conf_sections(etc / "pjsip.conf")["transport-udp"]
    assert transport["bind"] == ["0.0.0.0:5060"]
    assert transport["external_media_address"] == ["203.0.113.7"]
    assert transport["external_signaling_address"] == ["203.0.113.7"]
    assert transport["local_net"] == ["172.16.0.0/12", "127.0.0.0/8"]
    assert manager["general"]["bindaddr"] == ["127.0.0.1"]        # AMI stays on loopback
    for conf in ASTERISK_CONF.glob("*.conf"):
        if conf.name not in ("manager.conf", "pjsip.conf"):
            assert (etc / conf.name).read_bytes() == conf.read_bytes(), conf.name
    assert sorted(p.name for p in etc.iterdir()) == sorted(
        [p.name for p in ASTERISK_CONF.glob("*.conf")] + ["rtp.conf"])


def test_render_without_external_address_only_rebinds(tmp_path):
    result = render(tmp_path, ACD_AMI_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    transport = conf_sections(tmp_path / "etc" / "pjsip.conf")["transport-udp"]
    assert transport == {"type": ["transport"], "protocol": ["udp"], "bind": ["0.0.0.0:5060"]}


@pytest.mark.parametrize("secret", ["short", SANDBOX_SECRET, "spaces are not allowed here", "semi;colon-0123456789"])
def test_render_refuses_a_weak_or_unsafe_secret(tmp_path, secret):
    result = render(tmp_path, ACD_AMI_SECRET=secret)
    assert result.returncode == 1
    assert "ACD_AMI_SECRET" in result.stderr


def test_render_takes_local_files_verbatim(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    (local / "pjsip.conf").write_text("[transport-udp]\ntype = transport\nprotocol = udp\nbind = 192.0.2.1:5060\n")
    (local / "manager.conf").write_text("[general]\nenabled = yes\n\n[acd-router]\nsecret = site-secret\n")
    result = render(tmp_path, local, ACD_AMI_SECRET=SECRET)
    assert result.returncode == 0, result.stderr
    etc = tmp_path / "etc"
    assert (etc / "pjsip.conf").read_bytes() == (local / "pjsip.conf").read_bytes()
    assert (etc / "manager.conf").read_bytes() == (local / "manager.conf").read_bytes()


def test_published_rtp_ports_are_rtp_conf_range():
    rtp = conf_sections(DEPLOY / "asterisk" / "rtp.conf")["general"]
    rtp_range = f"{rtp['rtpstart'][0]}-{rtp['rtpend'][0]}"
    ports = yaml.safe_load(COMPOSE.read_text())["services"]["netns"]["ports"]
    assert f"{rtp_range}:{rtp_range}/udp" in ports
    assert "5060:5060/udp" in ports
    assert f"{rtp_range}/udp" in (DEPLOY / "asterisk" / "Dockerfile").read_text()


# ---- docker-compose.yml ---------------------------------------------------------------------

def test_asterisk_and_router_share_one_network_namespace():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["asterisk"]["network_mode"] == services["router"]["network_mode"] == "service:netns"
    assert "ports" not in services["asterisk"] and "ports" not in services["router"]
    assert services["router"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["router"]["environment"]["ACD_DATABASE_URL"].endswith("@postgres:5432/acd_router")


def test_every_interpolated_variable_is_in_env_example():
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", COMPOSE.read_text()))
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (DEPLOY / ".env.example").read_text(), re.M))
    assert used == documented


def test_router_health_check_asks_the_web_port_of_router_yaml():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    web = yaml.safe_load(ROUTER_YAML.read_text())["web"]
    (check,) = [part for part in services["router"]["healthcheck"]["test"] if "/healthz" in part]
    assert f"http://{web['host']}:{web['port']}/healthz" in check


def test_host_variant_puts_every_service_on_loopback(tmp_path, monkeypatch):
    from deploy import stack_load                 # deploy/ as a namespace package from the repository

    config = tmp_path / "router.yaml"
    spec = stack_load.host_variant(yaml.safe_load(COMPOSE.read_text()), config)
    services = spec["services"]
    assert set(services) == {"postgres", "asterisk", "router"}
    for name, service in services.items():
        assert service["network_mode"] == "host" and "ports" not in service, name
        assert all(v.startswith("/") or not v.startswith(".") for v in service["volumes"]), name
        assert service["restart"] == "unless-stopped" and ("healthcheck" in service or name == "asterisk")
    assert services["postgres"]["environment"]["POSTGRES_LISTEN_ADDRESSES"] == "127.0.0.1"
    assert services["asterisk"]["environment"]["ACD_SIP_BIND"] == "127.0.0.1:5060"
    router = services["router"]
    assert router["environment"]["ACD_DATABASE_URL"].endswith(f"@127.0.0.1:{stack_load.PG_PORT}/acd_router")
    assert f"{config}:/etc/acd-router/router.yaml:ro" in router["volumes"]
    assert router["command"].count("--login") == len(stack_load.sip_load.ANSWERING)
    # the SIP load centre as the containerised router reads it, flows from the repository
    centre = stack_load.load_centre_config()
    assert centre["ami"]["secret"] == "${ACD_AMI_SECRET}"
    centre["flows"] = str(REPO / "benchmarks" / "sip_flows")
    config.write_text(yaml.safe_dump(centre))
    monkeypatch.setenv("ACD_AMI_SECRET", SECRET)
    loaded, problems = check_config(config)
    assert loaded is not None and not problems.errors, [str(p) for p in problems.errors]
    assert loaded.web.port == yaml.safe_load(ROUTER_YAML.read_text())["web"]["port"]


def compose_command() -> list[str] | None:
    """`docker compose` when the plugin is there, else a standalone docker-compose (v2)."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    standalone = shutil.which("docker-compose", path=search)
    return [standalone] if standalone else None


def compose_config(tmp_path: Path, env_lines: str) -> subprocess.CompletedProcess:
    env_file = tmp_path / "test.env"        # not deploy/.env: a developer's own must not count
    env_file.write_text(env_lines)
    environ = {key: value for key, value in os.environ.items()
               if key not in ("ACD_AMI_SECRET", "POSTGRES_PASSWORD")}
    command = compose_command()
    assert command is not None
    return subprocess.run([*command, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "--quiet"],
                          env=environ, capture_output=True, text=True, timeout=60)


@pytest.fixture
def compose_cli():
    if compose_command() is None:
        if os.environ.get("ACD_REQUIRE_COMPOSE") == "1":
            pytest.fail("ACD_REQUIRE_COMPOSE=1 but neither the docker compose plugin nor docker-compose is installed")
        pytest.skip("neither the docker compose plugin nor docker-compose is installed")


def test_docker_compose_accepts_the_stack(tmp_path, compose_cli):
    result = compose_config(tmp_path, f"ACD_AMI_SECRET={SECRET}\nPOSTGRES_PASSWORD=pw0123456789\n")
    assert result.returncode == 0, result.stderr


def test_docker_compose_refuses_to_run_without_the_secrets(tmp_path, compose_cli):
    result = compose_config(tmp_path, "POSTGRES_PASSWORD=pw0123456789\n")
    assert result.returncode != 0
    assert "ACD_AMI_SECRET" in result.stderr


# ---- the router against PostgreSQL, configured as in the stack -----------------------------

async def test_router_migrates_the_database_named_by_acd_database_url(database_url):
    result = subprocess.run([sys.executable, "-m", "router", "db", "migrate", "--config", str(ROUTER_YAML)],
                            cwd=REPO, env=deploy_environ(ACD_DATABASE_URL=database_url),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('events') IS NOT NULL")
    finally:
        await conn.close()
