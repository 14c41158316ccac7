"""checkov policies for compose.yaml: the hardening every container of the mesh has, one rule per check so that a
waiver (`# checkov:skip=CKV_A2A_COMPOSE_n: reason` inside the service) names exactly what it excuses.

checkov ships no Compose policies; these run in its generic YAML framework over each entry of `services` (with the
`x-` anchors merged in, as Compose merges them). The same rules hold on Kubernetes through checkov's own CKV_K8S_*
checks and tests/test_deploy_artifacts.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.yaml_doc.base_yaml_check import BaseYamlCheck
from checkov.yaml_doc.enums import BlockType

Service = dict[str, Any]


class ComposeServiceCheck(BaseYamlCheck):
    """One rule over every service of a Compose file (a YAML document with a `services` mapping)."""

    def __init__(self, check_id: str, name: str, rule: Callable[[Service], bool]) -> None:
        super().__init__(
            name=name,
            id=check_id,
            categories=(CheckCategories.GENERAL_SECURITY,),
            supported_entities=("services",),
            block_type=BlockType.ARRAY,
        )
        self.rule = rule

    def scan_entity_conf(self, conf: Any, entity_type: str) -> tuple[CheckResult, Any]:
        if not isinstance(conf, dict):
            return CheckResult.UNKNOWN, conf
        return (CheckResult.PASSED if self.rule(conf) else CheckResult.FAILED), conf


def drops_all_capabilities(service: Service) -> bool:
    return "ALL" in (service.get("cap_drop") or []) and not service.get("cap_add")


def read_only_root(service: Service) -> bool:
    return service.get("read_only") is True


def no_new_privileges(service: Service) -> bool:
    return any(str(option).replace("=", ":") == "no-new-privileges:true" for option in service.get("security_opt", []))


def shares_nothing_of_the_host(service: Service) -> bool:
    host_modes = any(service.get(key) == "host" for key in ("network_mode", "pid", "ipc", "userns_mode", "uts"))
    volumes = [v if isinstance(v, str) else str(v.get("source", "")) for v in service.get("volumes", [])]
    socket = any("docker.sock" in volume or "podman.sock" in volume for volume in volumes)
    return not service.get("privileged") and not host_modes and not socket and not service.get("devices")


def memory_limited(service: Service) -> bool:
    limits = ((service.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    return bool(limits.get("memory") or service.get("mem_limit"))


def image_tagged(service: Service) -> bool:
    image = str(service.get("image", ""))
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def published_on_loopback(service: Service) -> bool:
    """A published port names its host address: 127.0.0.1 (or ::1); never every interface by default."""
    for port in service.get("ports", []):
        if isinstance(port, dict):
            if port.get("published") and port.get("host_ip") not in ("127.0.0.1", "::1"):
                return False
        elif not str(port).startswith(("127.0.0.1:", "[::1]:")):
            return False
    return True


def health_checked(service: Service) -> bool:
    check = service.get("healthcheck") or {}
    return bool(check.get("test")) and not check.get("disable")


RULES: list[tuple[str, str, Callable[[Service], bool]]] = [
    ("CKV_A2A_COMPOSE_1", "Compose service drops every capability and adds none", drops_all_capabilities),
    ("CKV_A2A_COMPOSE_2", "Compose service has a read-only root filesystem", read_only_root),
    ("CKV_A2A_COMPOSE_3", "Compose service cannot gain privileges (no-new-privileges)", no_new_privileges),
    (
        "CKV_A2A_COMPOSE_4",
        "Compose service is not privileged and shares no namespace, socket or device of the host",
        shares_nothing_of_the_host,
    ),
    ("CKV_A2A_COMPOSE_5", "Compose service has a memory limit", memory_limited),
    ("CKV_A2A_COMPOSE_6", "Compose service image has an explicit tag other than latest, or a digest", image_tagged),
    ("CKV_A2A_COMPOSE_7", "Compose service publishes its ports on loopback only", published_on_loopback),
    ("CKV_A2A_COMPOSE_8", "Compose service has a health check", health_checked),
]

checks = [ComposeServiceCheck(check_id, name, rule) for check_id, name, rule in RULES]
