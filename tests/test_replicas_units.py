"""Several containers on one storage, the fast part: REGISTRIES_FILE `replicas:` parsed and checked at start
(errors naming the entry and the field), and the preflight rule that replicas share one storage."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from janitor import errors
from janitor.config.registries import RegistriesFileError, parse
from janitor.config.settings import Replica, Settings
from janitor.window import preflight

BASE = Settings(registry_url="http://127.0.0.1:5000", registry_container="legacy")


def doc(*entries: dict[str, Any]) -> str:
    return yaml.safe_dump({"registries": list(entries)})


def pair(**extra: Any) -> dict[str, Any]:
    return {"name": "eu", "url": "http://127.0.0.1:5000", "replicas": [
        {"container": "reg-1", "url": "http://127.0.0.1:5001"},
        {"container": "reg-2", "url": "http://127.0.0.1:5002/"}], **extra}


def test_replicas_are_parsed_in_order_and_the_first_is_the_container_gc_runs_in() -> None:
    eu = parse(doc(pair()), BASE).get("eu")
    assert eu.replicas == (Replica("reg-1", "http://127.0.0.1:5001"), Replica("reg-2", "http://127.0.0.1:5002"))
    assert eu.registry_container == "reg-1" and eu.registry_url == "http://127.0.0.1:5000"


def test_one_container_is_one_replica_at_the_registry_url() -> None:
    one = parse(doc({"name": "us", "url": "http://127.0.0.1:6000", "container": "reg-us"}), BASE).get("us")
    assert one.replicas == (Replica("reg-us", "http://127.0.0.1:6000"),)
    assert BASE.replicas == (Replica("legacy", "http://127.0.0.1:5000"),)  # without the file: unchanged


@pytest.mark.parametrize(("replicas", "extra", "said"), [
    ([], {}, "replicas must be a non-empty list"),
    ("reg-1", {}, "replicas must be a non-empty list"),
    (["reg-1"], {}, "replicas[0] must be a mapping"),
    ([{"container": "reg-1"}], {}, "replicas[0].url must be a non-empty string"),
    ([{"url": "http://127.0.0.1:5001"}], {}, "replicas[0].container must be a non-empty string"),
    ([{"container": "reg-1", "url": "127.0.0.1:5001"}], {}, "replicas[0].url '127.0.0.1:5001' must be http(s)"),
    ([{"container": "reg-1", "url": "http://127.0.0.1:5001", "port": 1}], {}, "replicas[0]: unknown field(s) ['port']"),
    ([{"container": "reg-1", "url": "http://127.0.0.1:5001"}, {"container": "reg-1", "url": "http://127.0.0.1:5002"}],
     {}, "replicas[1].container 'reg-1' is named twice"),
    ([{"container": "reg-1", "url": "http://127.0.0.1:5001"}, {"container": "reg-2", "url": "http://127.0.0.1:5001"}],
     {}, "replicas[1].url 'http://127.0.0.1:5001' is named twice"),
    ([{"container": "reg-1", "url": "http://127.0.0.1:5001"}], {"container": "reg-x"}, "not both"),
])
def test_bad_replicas_stop_the_start_naming_the_entry_and_field(replicas: Any, extra: dict[str, Any], said: str) -> None:
    with pytest.raises(RegistriesFileError) as exc:
        parse(doc(pair(replicas=replicas, **extra)), BASE)
    assert "registries[0] (eu)" in str(exc.value) and said in str(exc.value), str(exc.value)


def test_a_replica_of_one_registry_is_no_container_or_address_of_another() -> None:
    other = {"name": "us", "url": "http://127.0.0.1:6000", "container": "reg-2"}
    with pytest.raises(RegistriesFileError, match=r"eu and us have the same container"):
        parse(doc(pair(), other), BASE)
    other = {"name": "us", "url": "http://127.0.0.1:5002", "container": "reg-us"}
    with pytest.raises(RegistriesFileError, match=r"eu and us have the same url \(http://127.0.0.1:5002\)"):
        parse(doc(pair(), other), BASE)


def _report(driver: str = "filesystem", root: str | None = "/var/lib/registry") -> preflight.Report:
    return preflight.Report("/etc/docker/registry/config.yml", preflight.StorageAccess(driver), root)


def _attrs(*mounts: dict[str, Any]) -> dict[str, Any]:
    return {"Mounts": list(mounts)}


VOLUME = {"Type": "volume", "Name": "shared", "Source": "/var/lib/docker/volumes/shared/_data",
          "Destination": "/var/lib/registry", "RW": True}


def test_replicas_on_one_volume_pass_and_on_their_own_layers_or_volumes_fail() -> None:
    assert preflight.replica_traps("reg-1", _attrs(VOLUME), _report(), "reg-2", _attrs(VOLUME), _report()) == []
    # The same directory of one volume, mounted at different places: the same storage; another one is not.
    a, b = {**VOLUME, "Destination": "/var/lib"}, {**VOLUME, "Destination": "/data"}
    assert preflight.replica_traps("reg-1", _attrs(a), _report(root="/var/lib/registry"), "reg-2", _attrs(b),
                                   _report(root="/data/registry")) == []
    assert preflight.replica_traps("reg-1", _attrs(a), _report(root="/var/lib/registry"), "reg-2", _attrs(b),
                                   _report(root="/data/other"))
    own = {**VOLUME, "Name": "anon", "Source": "/var/lib/docker/volumes/anon/_data"}
    found = preflight.replica_traps("reg-1", _attrs(VOLUME), _report(), "reg-2", _attrs(own), _report())
    assert [t.code for t in found] == ["REGISTRY_REPLICA_STORAGE_MISMATCH"]
    assert "'reg-2'" in found[0].message and "anon" in found[0].message and "shared" in found[0].message
    layer = preflight.replica_traps("reg-1", _attrs(VOLUME), _report(), "reg-2", _attrs(), _report())
    assert isinstance(layer[0], errors.ReplicaStorageMismatch) and "own container layer" in layer[0].message


def test_replicas_with_different_drivers_fail_and_buckets_are_not_compared() -> None:
    found = preflight.replica_traps("reg-1", _attrs(VOLUME), _report(), "reg-2", _attrs(), _report("s3", None))
    assert found and "'s3'" in found[0].message and "'filesystem'" in found[0].message
    assert preflight.replica_traps("reg-1", _attrs(), _report("s3", None), "reg-2", _attrs(), _report("s3", None)) == []
