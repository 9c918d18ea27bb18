"""Many registries, the fast part: REGISTRIES_FILE parsing and validation, the keys of each registry, and the
API's /v1/registries and /v1/registries/{registry}/... on a real Redis (no registry or worker needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from janitor import errors
from janitor.config.registries import RegistriesFileError, load, parse
from janitor.config.settings import Settings
from janitor.jobs import records
from janitor.jobs.records import RUNNING, JobStore, Keys

BASE = Settings(registry_url="http://127.0.0.1:5000", registry_container="legacy", require_approval=False,
                docker_host="unix:///var/run/docker.sock")


def doc(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"registries": list(entries)})


def entry(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": f"http://127.0.0.1:{port}", "container": f"reg-{name}", **extra}


# --- the file ---------------------------------------------------------------------------------------------------

def test_without_the_file_one_registry_named_default_keeps_its_host_keys() -> None:
    known = load(BASE)
    assert known.names == ["default"] and known.default == "default"
    only = known.get("default")
    assert only.registry_url == BASE.registry_url and only.registry_container == "legacy"
    # Upgrade: the keys of a deployment without the file stay where they always were.
    assert Keys.of(only).prefix == "janitor:127.0.0.1:5000" and only.namespace == "127.0.0.1:5000"
    assert Keys.of(only).queue_name == "janitor:127.0.0.1:5000"  # no longer the shared "janitor" queue


def test_a_file_makes_one_settings_per_registry(tmp_path: Path) -> None:
    secret = tmp_path / "eu.pw"
    secret.write_text("from-file\n")
    text = doc(entry("us", 5001),
               entry("eu", 5002, username="bot", password_file=str(secret), docker_host="tcp://127.0.0.1:2375",
                     default=True, require_approval=True, webhook_urls=["http://127.0.0.1:9/h"], max_window=60),
               entry("ap", 5003, username="x", password_env="AP_PW", namespace="registry.example:5000"))
    known = parse(text, BASE, env={"AP_PW": "from-env"})
    assert known.names == ["us", "eu", "ap"] and known.default == "eu"
    us, eu, ap = known.get("us"), known.get("eu"), known.get("ap")
    assert us.docker_host == BASE.docker_host and us.require_approval is False  # the environment's defaults
    assert eu.docker_host == "tcp://127.0.0.1:2375" and eu.registry_password == "from-file"
    assert eu.require_approval is True and eu.webhook_urls == ("http://127.0.0.1:9/h",) and eu.max_window == 60.0
    assert ap.registry_password == "from-env" and ap.namespace == "registry.example:5000"
    assert [Keys.of(s).prefix for s in known] == ["janitor:us", "janitor:eu", "janitor:registry.example:5000"]
    assert known.find("registry.example:5000") is ap and known.find("eu") is eu and known.find("nope") is None
    assert [s.name for s in known.select(["ap", "us"])] == ["ap", "us"] and len(known.select([])) == 3
    with pytest.raises(RegistriesFileError, match="unknown registries"):
        known.select(["mars"])
    with pytest.raises(errors.RegistryNotKnown):
        known.get("mars")


def test_the_first_registry_is_the_default_unless_one_says_so() -> None:
    assert parse(doc(entry("a", 5001), entry("b", 5002)), BASE).default == "a"


@pytest.mark.parametrize("text, message", [
    ("registries: [", "not valid YAML"),
    ("- name: a", "one key, `registries`"),
    ("registries: []", "non-empty list"),
    (doc(entry("A", 5001)), "name 'A' must match"),
    (doc(entry("a" * 64, 5001)), "must match"),
    (doc(entry("-a", 5001)), "must match"),
    (doc({"url": "http://127.0.0.1:1", "container": "c"}), "name None must match"),
    (doc(entry("a", 5001, colour="red")), "unknown field(s) ['colour']"),
    (doc({"name": "a", "url": "ftp://x", "container": "c"}), "must be http(s)://host[:port]"),
    (doc({"name": "a", "url": "http://127.0.0.1:1/v2", "container": "c"}), "must be http(s)://host[:port]"),
    (doc({"name": "a", "url": "http://127.0.0.1:1"}), "container must be a non-empty string"),
    (doc(entry("a", 5001, docker_host="127.0.0.1:2375")), "docker_host '127.0.0.1:2375' must start with"),
    (doc(entry("a", 5001, username="u")), "username and a password"),
    (doc(entry("a", 5001, password="p")), "username and a password"),
    (doc(entry("a", 5001, username="u", password="p", password_env="X")), "give one of password"),
    (doc(entry("a", 5001, username="u", password_env="NOT_SET_ANYWHERE")), "NOT_SET_ANYWHERE, which is not set"),
    (doc(entry("a", 5001, username="u", password_file="/nonexistent/pw")), "cannot read it"),
    (doc(entry("a", 5001, namespace="x*")), "namespace 'x*' must match"),
    (doc(entry("a", 5001, require_approval="yes")), "require_approval must be true or false"),
    (doc(entry("a", 5001, max_window=-1)), "max_window must be a number"),
    (doc(entry("a", 5001, webhook_urls="http://x")), "webhook_urls must be a list"),
    (doc(entry("a", 5001), entry("a", 5002)), "name 'a' is used twice"),
    (doc(entry("a", 5001), entry("b", 5001)), "a and b have the same url"),
    (doc(entry("a", 5001), {**entry("b", 5002), "container": "reg-a"}), "a and b have the same container"),
    (doc(entry("a", 5001, namespace="n"), entry("b", 5002, namespace="n")), "a and b have the same namespace"),
    (doc(entry("a", 5001, default=True), entry("b", 5002, default=True)), "only one registry may be"),
])
def test_a_bad_file_is_refused_naming_the_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(RegistriesFileError) as caught:
        parse(text, BASE, env={})
    assert message in str(caught.value), str(caught.value)


def test_same_container_name_on_different_docker_hosts_is_fine() -> None:
    known = parse(doc(entry("a", 5001, docker_host="tcp://127.0.0.1:2375"),
                      {**entry("b", 5002, docker_host="tcp://127.0.0.1:2376"), "container": "reg-a"}), BASE)
    assert len(known) == 2


def test_an_unreadable_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(RegistriesFileError, match="cannot read it"):
        load(Settings(registries_file=str(tmp_path / "missing.yaml")))
    bad = tmp_path / "bad.yaml"
    bad.write_text(doc(entry("Bad", 1)))
    with pytest.raises(RegistriesFileError, match=f"REGISTRIES_FILE {bad}: registries\\[0\\] \\(Bad\\)"):
        load(Settings(registries_file=str(bad)))
    from service import create_app
    with pytest.raises(RegistriesFileError):
        create_app(Settings(registries_file=str(bad)))


def test_settings_read_the_new_variables() -> None:
    s = Settings.from_env({"REGISTRIES_FILE": "/etc/r.yaml", "WORKER_REGISTRIES": "a, b,", "DOCKER_HOST": "tcp://x:1"})
    assert s.registries_file == "/etc/r.yaml" and s.worker_registries == ("a", "b") and s.docker_host == "tcp://x:1"
    assert Settings.from_env({}).name == "default"


# --- keys and records on a real Redis ---------------------------------------------------------------------------

def test_job_records_and_recovery_scans_stay_in_their_registry(redis_conn: redis.Redis) -> None:
    a, b = Keys("a", "a"), Keys("a-b", "a-b")  # "a" is a prefix of "a-b": the scan must not reach across
    sa, sb = JobStore(redis_conn, 60, a), JobStore(redis_conn, 60, b)
    ja, jb = sa.create("gc", {}), sb.create("gc", {})
    assert ja["registry"] == "a" and jb["registry"] == "a-b"
    for store, job in ((sa, ja), (sb, jb)):
        job.update(status=RUNNING)
        store.save(job)
    assert redis_conn.exists(f"janitor:a:job:{ja['id']}") and redis_conn.exists(f"janitor:a-b:job:{jb['id']}")
    assert [j["id"] for j in sa.running()] == [ja["id"]] and [j["id"] for j in sb.running()] == [jb["id"]]
    assert sa.get(jb["id"]) is None and [j["id"] for j in sb.history()] == [jb["id"]]
    # A record that names another registry is never taken as this one's, wherever it lies.
    stray = dict(jb, id="f" * 32)
    redis_conn.set(a.job(stray["id"]), json.dumps(stray))
    assert [j["id"] for j in sa.running()] == [ja["id"]]


def test_legacy_job_records_move_under_their_registry(redis_conn: redis.Redis) -> None:
    """Upgrade: records at the old shared janitor:job:<id> move to the registry whose job index lists them."""
    mine, other = Keys("127.0.0.1:5000", "default"), Keys("127.0.0.1:6000", "default")
    redis_conn.zadd(mine.jobs, {"1" * 32: 1})
    redis_conn.zadd(other.jobs, {"2" * 32: 1})
    for job_id in ("1" * 32, "2" * 32):
        redis_conn.set(records.legacy_job(job_id), json.dumps({"id": job_id, "status": "succeeded"}), ex=500)
        redis_conn.hset(f"janitor:webhooks:{job_id}", "d", json.dumps({"url": "u", "queued_at": "1"}))
    assert records.adopt_legacy(redis_conn, mine) == 2
    assert records.adopt_legacy(redis_conn, mine) == 0  # once
    store = JobStore(redis_conn, 60, mine)
    job = store.get("1" * 32)
    assert job and job["webhooks"] == [{"url": "u", "queued_at": "1"}] and redis_conn.ttl(mine.job("1" * 32)) > 0
    assert store.get("2" * 32) is None and redis_conn.exists(records.legacy_job("2" * 32))  # not ours: left


# --- the API ----------------------------------------------------------------------------------------------------

@pytest.fixture
def two(tmp_path: Path, redis_server: str, redis_conn: redis.Redis):  # type: ignore[no-untyped-def]
    """An app with two registries (their URLs answer nothing: only Redis is needed here)."""
    from service import create_app

    path = tmp_path / "registries.yaml"
    path.write_text(doc(entry("us", 1), entry("eu", 2, default=True)))
    app = create_app(Settings(registries_file=str(path), redis_url=redis_server, api_tokens=("t",),
                              registry_retry=0, http_timeout=2))
    return app.test_client()


H = {"Authorization": "Bearer t"}


def test_registries_are_listed_with_their_readiness(two, redis_conn: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    assert two.get("/v1/registries").status_code == 401
    listed = two.get("/v1/registries", headers=H)
    assert listed.status_code == 200, listed.get_json()
    body = listed.get_json()
    assert [(r["name"], r["default"]) for r in body["items"]] == [("us", False), ("eu", True)] and body["total"] == 2
    us = body["items"][0]
    assert us["url"] == "http://127.0.0.1:1" and us["container"] == "reg-us" and us["status"] == "unavailable"
    assert us["checks"]["redis"]["ok"] and not us["checks"]["registry"]["ok"]
    assert us["checks"]["docker"]["code"] == "NO_WORKER"
    # A worker that cannot reach eu's Docker host says so; /readyz of the default (eu) shows it.
    redis_conn.set("janitor:eu:worker-unreachable", json.dumps({"ok": False, "code": "DOCKER_UNAVAILABLE",
                                                               "message": "Docker engine tcp://x unreachable"}))
    one = two.get("/v1/registries/eu", headers=H).get_json()
    assert one["name"] == "eu" and one["checks"]["docker"]["code"] == "DOCKER_UNAVAILABLE"
    assert two.get("/readyz").get_json()["checks"]["docker"]["code"] == "DOCKER_UNAVAILABLE"


def test_unknown_registry_is_404_in_the_error_shape_after_the_token_check(two) -> None:  # type: ignore[no-untyped-def]
    assert two.get("/v1/registries/mars/jobs").status_code == 401  # nothing learnt without a token
    for path in ("/v1/registries/mars", "/v1/registries/mars/jobs", "/v1/registries/mars/jobs/abc"):
        resp = two.get(path, headers=H)
        assert resp.status_code == 404, (path, resp.get_json())
        body = resp.get_json()
        assert body["code"] == "REGISTRY_UNKNOWN" and body["status"] == 404 and "mars" in body["message"]
        assert body["details"]["registry"] == "mars"
    resp = two.post("/v1/registries/mars/gc", json={}, headers=H)
    assert resp.status_code == 404 and resp.get_json()["code"] == "REGISTRY_UNKNOWN"


def test_a_prefixed_path_acts_on_its_registry_only(two, redis_conn: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    made = two.post("/v1/registries/us/gc", json={}, headers=H)
    assert made.status_code == 202, made.get_json()
    job = made.get_json()
    assert job["registry"] == "us" and made.headers["Location"].endswith(f"/v1/registries/us/jobs/{job['id']}")
    # Its record, its waiting list and its window job are us's; nothing of it under eu (the default).
    assert redis_conn.exists(f"janitor:us:job:{job['id']}") and redis_conn.llen("janitor:us:pending") == 1
    queued = redis_conn.lrange("rq:queue:janitor:us", 0, -1)
    assert len(queued) == 1 and not redis_conn.exists("rq:queue:janitor:eu") and not redis_conn.exists("rq:queue:janitor")
    assert two.get(made.headers["Location"], headers=H).get_json()["id"] == job["id"]
    assert two.get(f"/v1/jobs/{job['id']}", headers=H).status_code == 404  # /v1/jobs is the default's (eu)
    assert two.get(f"/v1/registries/eu/jobs/{job['id']}", headers=H).status_code == 404
    assert [j["id"] for j in two.get("/v1/registries/us/jobs", headers=H).get_json()["items"]] == [job["id"]]
    assert two.get("/v1/jobs", headers=H).get_json()["items"] == []
    # The default registry's unprefixed paths build unprefixed Locations, and act on eu.
    other = two.post("/v1/gc", json={}, headers=H)
    assert other.headers["Location"].endswith(f"/v1/jobs/{other.get_json()['id']}")
    assert other.get_json()["registry"] == "eu" and redis_conn.llen("rq:queue:janitor:eu") == 1
    # Cancelling through the prefix works on us's record.
    cancelled = two.post(f"/v1/registries/us/jobs/{job['id']}/cancel", headers=H)
    assert cancelled.status_code == 200 and cancelled.get_json()["status"] == "cancelled"


def test_policies_are_per_registry(two) -> None:  # type: ignore[no-untyped-def]
    policy = {"name": "nightly", "repositories": ["team/*"], "keep_last": 3}
    made = two.post("/v1/registries/us/policies", json=policy, headers=H)
    assert made.status_code == 201, made.get_json()
    assert made.headers["Location"].endswith("/v1/registries/us/policies/nightly")
    assert [p["name"] for p in two.get("/v1/registries/us/policies", headers=H).get_json()["items"]] == ["nightly"]
    assert two.get("/v1/policies", headers=H).get_json()["items"] == []
    assert two.get("/v1/registries/eu/policies/nightly", headers=H).status_code == 404


def test_metrics_carry_the_registry_label_with_a_file(two, redis_conn: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    from prometheus_client.parser import text_string_to_metric_families

    assert two.post("/v1/registries/us/gc", json={}, headers=H).status_code == 202
    text = two.get("/metrics").get_data(as_text=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert samples[("janitor_queue_depth", (("registry", "us"),))] == 1
    assert samples[("janitor_queue_depth", (("registry", "eu"),))] == 0
    assert samples[("janitor_redis_up", (("registry", "eu"),))] == 1
    assert samples[("janitor_jobs_total", (("kind", "gc"), ("outcome", "succeeded"), ("registry", "us")))] == 0
    assert ("janitor_window_duration_seconds_count", (("registry", "eu"),)) in samples
    assert not [k for k in samples if k[0].startswith("janitor_queue") and not k[1]]  # no unlabelled series


@pytest.mark.parametrize("url", ["http://janitor:s3cret@127.0.0.1:5000", "https://s3cret@registry.example",
                                 "http://janitor:s3cret@127.0.0.1:5000/"])
def test_credentials_in_a_registry_url_are_refused_at_start_without_echoing_them(url: str) -> None:
    """They would reach Redis key names, confirm strings, job records and webhooks."""
    with pytest.raises(ValueError) as caught:
        Settings.from_env({"REGISTRY_URL": url})
    assert "REGISTRY_URL must not carry credentials" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(RegistriesFileError) as caught_file:
        parse(doc(entry("a", 5001), {**entry("b", 5002), "url": url}), BASE, env={})
    message = str(caught_file.value)
    assert "registries[1] (b): url must not carry credentials" in message and "s3cret" not in message, message
    assert Settings.from_env({"REGISTRY_URL": "http://127.0.0.1:5000/"}).registry_url == "http://127.0.0.1:5000"


# -- the janitor's own way to an object store --------------------------------------------------------------


def test_s3_overrides_from_the_environment(tmp_path: Any) -> None:
    from janitor.config.storage import S3Overrides, s3_from_env
    assert Settings.from_env({}).s3 == S3Overrides() and not Settings.from_env({}).s3
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    found = Settings.from_env({"JANITOR_S3_ENDPOINT": "http://127.0.0.1:9000/", "JANITOR_S3_ACCESS_KEY": "k",
                               "JANITOR_S3_SECRET_KEY_FILE": str(secret), "JANITOR_S3_REGION": "eu-west-1"}).s3
    assert found == S3Overrides("http://127.0.0.1:9000", "eu-west-1", "k", "from-file")
    assert "from-file" not in repr(found)
    with pytest.raises(ValueError, match="go together"):
        s3_from_env({"JANITOR_S3_ACCESS_KEY": "k"})
    with pytest.raises(ValueError, match="http"):
        s3_from_env({"JANITOR_S3_ENDPOINT": "127.0.0.1:9000"})


def test_s3_overrides_per_registry(tmp_path: Any) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret")
    text = f"""
registries:
  - name: eu
    url: http://127.0.0.1:5001
    container: reg-eu
    storage: {{s3: {{endpoint: "https://s3.internal:9000", access_key: janitor, secret_key_file: "{secret}"}}}}
  - name: us
    url: http://127.0.0.1:5002
    container: reg-us
    storage: {{s3: {{access_key: other, secret_key_env: US_SECRET}}}}
"""
    regs = parse(text, Settings(), {"US_SECRET": "from-env"})
    eu, us = regs.get("eu").s3, regs.get("us").s3
    assert (eu.endpoint, eu.access_key, eu.secret_key) == ("https://s3.internal:9000", "janitor", "s3cret")
    assert (us.endpoint, us.access_key, us.secret_key) == (None, "other", "from-env")
    for bad, why in (("{s3: {bucket: x}}", "unknown field"), ("{gcs: {}}", "one key, `s3`"),
                     ("{s3: {access_key: a}}", "go together"), ("{s3: {endpoint: ftp://x}}", "http"),
                     ("{s3: {access_key: a, secret_key_env: NOPE}}", "not set")):
        with pytest.raises(RegistriesFileError, match=why):
            parse(f"registries:\n  - {{name: a, url: 'http://h:1', container: c, storage: {bad}}}\n",
                             Settings(), {})
