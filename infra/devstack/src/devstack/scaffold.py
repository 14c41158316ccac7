"""`make new-agent NAME=...`: a new agent in one folder, wired into everything that must know it.

The agent's own code comes from templates/agent/; its Dockerfile, Compose service and Kubernetes manifest are derived
from the echo agent's (the template agent), so they follow whatever the project's deployment conventions are today.
The dev runner and the tests need no edit: they discover agents by folder (devstack.stack.discover_agents)."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import REPO_ROOT

TEMPLATES = Path(__file__).parent / "templates" / "agent"
TEMPLATE_AGENT = "echo"
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_NAME = 30


class ScaffoldError(ValueError):
    """The agent cannot be created as asked."""


@dataclass(frozen=True)
class AgentName:
    """The spellings of a new agent's name."""

    name: str

    @property
    def package(self) -> str:
        return "agent_" + self.name.replace("-", "_")

    @property
    def title(self) -> str:
        return " ".join(word.capitalize() for word in self.name.split("-"))

    @property
    def class_name(self) -> str:
        return "".join(word.capitalize() for word in self.name.split("-")) + "Agent"

    def fill(self, text: str) -> str:
        """A template with this name's spellings put in."""
        for placeholder, value in (
            ("__PKG__", self.package),
            ("__NAME__", self.name),
            ("__TITLE__", self.title),
            ("__CLASS__", self.class_name),
        ):
            text = text.replace(placeholder, value)
        return text

    def derive(self, text: str) -> str:
        """The template agent's text (Dockerfile, Compose block, manifest) rewritten for this agent."""
        text = text.replace(f"agent_{TEMPLATE_AGENT}", self.package).replace(
            f"agent-{TEMPLATE_AGENT}", f"agent-{self.name}"
        )
        return re.sub(rf"(?<![A-Za-z0-9_]){TEMPLATE_AGENT}(?![A-Za-z0-9_])", self.name, text)


def new_agent(name: str, root: Path = REPO_ROOT, *, lock: bool = True) -> list[Path]:
    """Create services/agents/<name> and wire it in; the files written or changed."""
    agent = _check(name, root)
    written = _render_code(agent, root)
    written.append(
        _write(
            root / "services/agents" / agent.name / "Dockerfile",
            agent.derive((root / "services/agents" / TEMPLATE_AGENT / "Dockerfile").read_text()),
        )
    )
    written += [_add_workspace_dependency(agent, root), _add_compose_service(agent, root)]
    written += _add_kubernetes_manifest(agent, root)
    if lock:
        subprocess.run(["uv", "lock", "--quiet"], cwd=root, check=True)
        written.append(root / "uv.lock")
    return written


def _check(name: str, root: Path) -> AgentName:
    if not NAME.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(f"agent name {name!r}: lowercase letters, digits and single dashes, at most {MAX_NAME}")
    if (root / "services/agents" / name).exists():
        raise ScaffoldError(f"services/agents/{name} already exists")
    return AgentName(name)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _render_code(agent: AgentName, root: Path) -> list[Path]:
    target = root / "services/agents" / agent.name
    written = []
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        relative = agent.fill(str(template.relative_to(TEMPLATES)))[: -len(".tmpl")]
        written.append(_write(target / relative, agent.fill(template.read_text())))
    return written


def _insert_after_last(text: str, pattern: str, addition: str, what: str) -> str:
    matches = list(re.finditer(pattern, text, flags=re.MULTILINE))
    if not matches:
        raise ScaffoldError(f"cannot find where to add the agent in {what}")
    end = matches[-1].end()
    return text[:end] + addition + text[end:]


def _add_workspace_dependency(agent: AgentName, root: Path) -> Path:
    path = root / "pyproject.toml"
    text = path.read_text()
    text = _insert_after_last(
        text, r'^    "agent-[a-z0-9-]+",$', f'\n    "agent-{agent.name}",', "pyproject dependencies"
    )
    text = _insert_after_last(
        text,
        r"^agent-[a-z0-9-]+ = \{ workspace = true \}$",
        f"\nagent-{agent.name} = {{ workspace = true }}",
        "pyproject sources",
    )
    return _write(path, text)


def _add_compose_service(agent: AgentName, root: Path) -> Path:
    path = root / "compose.yaml"
    text = path.read_text()
    block = re.search(rf"^  {TEMPLATE_AGENT}:\n(?:(?:    .*)?\n)*?(?=\n  \S|\Z)", text, flags=re.MULTILINE)
    if block is None:
        raise ScaffoldError(f"compose.yaml has no '{TEMPLATE_AGENT}' service to derive from")
    addition = "\n" + agent.derive(block.group(0))
    return _write(path, text[: block.end()] + addition + text[block.end() :])


def _add_kubernetes_manifest(agent: AgentName, root: Path) -> list[Path]:
    base = root / "k8s/base"
    manifest = _write(
        base / "agents" / f"{agent.name}.yaml", agent.derive((base / "agents" / f"{TEMPLATE_AGENT}.yaml").read_text())
    )
    kustomization = base / "kustomization.yaml"
    text = kustomization.read_text()
    text = _insert_after_last(
        text,
        r"^  - agents/[a-z0-9-]+\.yaml$",
        f"\n  - agents/{agent.name}.yaml",
        "k8s/base/kustomization.yaml resources",
    )
    image = re.search(rf"^  - name: a2a-mesh/{TEMPLATE_AGENT}\n(    .*\n)*", text, flags=re.MULTILINE)
    if image is None:
        raise ScaffoldError("k8s/base/kustomization.yaml lists no image for the template agent")
    text = text[: image.end()] + agent.derive(image.group(0)) + text[image.end() :]
    return [manifest, _write(kustomization, text)]
