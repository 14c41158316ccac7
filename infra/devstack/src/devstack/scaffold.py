"""`make new-agent NAME=...`: a new agent in one folder, wired into everything that must know it.

The agent's own code comes from templates/agent/, filled with its skill's id, name and description (options of
`make new-agent`, derived from the name when not given), then formatted with ruff so it passes the project's lint.
Its Compose service and Kubernetes manifest are derived from the echo agent's (the template agent), so they follow
whatever the project's deployment conventions are today; its image builds from services/Dockerfile, the one
Dockerfile of every Python service, with the agent's package and module as build arguments (in its Compose service),
so the agent has no Dockerfile of its own. The agent is declared in infra/devstack/topology.yaml, the one list the
dev runner, the PKI and the checks of Compose and Kubernetes read (devstack.topology). Every edit of a shared file
is structured (ruamel.yaml, tomlkit), never a regular expression."""

from __future__ import annotations

import copy
import io
import json
import keyword
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, merge_attrib
from ruamel.yaml.mergevalue import MergeValue
from ruamel.yaml.tokens import CommentToken

from a2amesh.agent import MeshAgent
from devstack.processes import REPO_ROOT
from devstack.topology import TOPOLOGY_FILE

TEMPLATES = Path(__file__).parent / "templates" / "agent"
TEMPLATE_AGENT = "echo"
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
MAX_NAME = 30
SKILL_ID = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*$")
MAX_SKILL_ID = 64
MAX_SKILL_NAME = 80
MAX_DESCRIPTION = 500
DEFAULT_DESCRIPTION = "Returns the text it is sent upper-cased, with its word count."
"""What the generated code does until its author changes it (so the card says the truth from the start)."""
PLACEHOLDER = re.compile(r"__(PKG|NAME|TITLE|CLASS|METHOD|SKILL_ID|SKILL_NAME_PY|DESCRIPTION_PY|DESCRIPTION_TOML)__")
LEFTOVER = re.compile(r"__[A-Z][A-Z_]*__")


class ScaffoldError(ValueError):
    """The agent cannot be created as asked."""


@dataclass(frozen=True)
class AgentName:
    """The spellings of a new agent's name, and its skill as the card shows it."""

    name: str
    skill_id: str = ""
    """The skill's id on the card (what requests name in metadata `skill`); the agent's name when empty."""
    skill_name: str = ""
    description: str = ""

    @property
    def package(self) -> str:
        return "agent_" + self.name.replace("-", "_")

    @property
    def title(self) -> str:
        return " ".join(word.capitalize() for word in self.name.split("-"))

    @property
    def class_name(self) -> str:
        return "".join(word.capitalize() for word in self.name.split("-")) + "Agent"

    @property
    def skill(self) -> str:
        return self.skill_id or self.name

    @property
    def skill_title(self) -> str:
        """The skill's display name: given, or its id in words ("units.convert" -> "Units convert")."""
        return self.skill_name or " ".join(re.split(r"[._-]", self.skill)).capitalize()

    @property
    def method(self) -> str:
        """The name of the skill's method: its id as a Python identifier ("units.convert" -> "units_convert")."""
        words = re.split(r"[._-]", self.skill)
        method = ("skill_" if words[0][0].isdigit() else "") + "_".join(words)
        taken = keyword.iskeyword(method) or method.startswith("__") or hasattr(MeshAgent, method)
        return method + "_skill" if taken else method

    @property
    def summary(self) -> str:
        return self.description or DEFAULT_DESCRIPTION

    def fill(self, text: str) -> str:
        """A template with this agent's spellings put in: plain where the template quotes them itself, as string
        literals (Python, TOML) where the value is free text."""
        values = {
            "PKG": self.package,
            "NAME": self.name,
            "TITLE": self.title,
            "CLASS": self.class_name,
            "METHOD": self.method,
            "SKILL_ID": self.skill,
            "SKILL_NAME_PY": python_string(self.skill_title),
            "DESCRIPTION_PY": python_string(self.summary),
            "DESCRIPTION_TOML": json.dumps(self.summary, ensure_ascii=False),  # a JSON string is a TOML basic string
        }
        filled = PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
        leftover = LEFTOVER.search(PLACEHOLDER.sub("", text))
        if leftover:
            raise ScaffoldError(f"template placeholder {leftover.group(0)} has no value")
        return filled

    def derive(self, text: str) -> str:
        """The template agent's text (Compose block, manifest) rewritten for this agent."""
        text = text.replace(f"agent_{TEMPLATE_AGENT}", self.package).replace(
            f"agent-{TEMPLATE_AGENT}", f"agent-{self.name}"
        )
        return re.sub(rf"(?<![A-Za-z0-9_]){TEMPLATE_AGENT}(?![A-Za-z0-9_])", self.name, text)


def python_string(value: str) -> str:
    """`value` as a Python string literal; a long one as parenthesized pieces, so no line passes the lint's limit
    (ruff format re-indents them)."""
    if len(value) <= 60:
        return json.dumps(value, ensure_ascii=False)
    pieces = textwrap.wrap(value, 70, drop_whitespace=False, break_long_words=True, break_on_hyphens=False)
    return "(\n" + "\n".join(json.dumps(piece, ensure_ascii=False) for piece in pieces) + "\n)"


def new_agent(
    name: str,
    root: Path = REPO_ROOT,
    *,
    skill_id: str = "",
    skill_name: str = "",
    description: str = "",
    lock: bool = True,
) -> list[Path]:
    """Create services/agents/<name> and wire it in; the files written or changed."""
    agent = _check(name, root, skill_id, skill_name, description)
    written = _render_code(agent, root)
    _format(root / "services/agents" / agent.name)
    written += [_add_topology_agent(agent, root), _add_workspace_dependency(agent, root)]
    written.append(_add_compose_service(agent, root))
    written += _add_kubernetes_manifest(agent, root)
    if lock:
        subprocess.run(["uv", "lock", "--quiet"], cwd=root, check=True)
        written.append(root / "uv.lock")
    return written


def _check(name: str, root: Path, skill_id: str, skill_name: str, description: str) -> AgentName:
    if not NAME.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(f"agent name {name!r}: lowercase letters, digits and single dashes, at most {MAX_NAME}")
    if skill_id and (not SKILL_ID.match(skill_id) or len(skill_id) > MAX_SKILL_ID):
        raise ScaffoldError(
            f"skill id {skill_id!r}: lowercase letters and digits, words joined by single '.', '-' or '_', "
            f"at most {MAX_SKILL_ID}"
        )
    skill_name, description = " ".join(skill_name.split()), " ".join(description.split())
    if len(skill_name) > MAX_SKILL_NAME:
        raise ScaffoldError(f"skill name: at most {MAX_SKILL_NAME} characters (got {len(skill_name)})")
    if len(description) > MAX_DESCRIPTION:
        raise ScaffoldError(f"description: at most {MAX_DESCRIPTION} characters (got {len(description)})")
    if (root / "services/agents" / name).exists():
        raise ScaffoldError(f"services/agents/{name} already exists")
    return AgentName(name, skill_id, skill_name, description)


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


def _format(folder: Path) -> None:
    """Format the generated code as the project's lint expects (the templates' free-text values vary in length)."""
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(folder)], check=True)


def _add_workspace_dependency(agent: AgentName, root: Path) -> Path:
    """The root project depends on the new member (so `uv sync` installs it) from the workspace: a structured edit
    (tomlkit keeps the file's comments and layout), after the last agent in each list."""
    path = root / "pyproject.toml"
    project = tomlkit.parse(path.read_text())
    dependencies = project["project"]["dependencies"]
    agents = [index for index, name in enumerate(dependencies) if str(name).startswith("agent-")]
    if not agents:
        raise ScaffoldError("pyproject.toml's dependencies list no agent to add this one after")
    dependencies.insert(agents[-1] + 1, f"agent-{agent.name}")
    sources = project["tool"]["uv"]["sources"]
    # the template agent's own entry, copied, so the new line is written as the others are ({ workspace = true })
    sources[f"agent-{agent.name}"] = copy.deepcopy(sources[f"agent-{TEMPLATE_AGENT}"])
    return _write(path, tomlkit.dumps(project))


def _round_trip_yaml() -> YAML:
    """A YAML loader/dumper that writes the project's files back as they were (comments, anchors, merges, quotes
    and indentation kept: compose.yaml and the kustomization round-trip byte for byte), so an edit is structured."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _derived_node(agent: AgentName, node: Any) -> Any:
    """A copy of the template agent's YAML node for this agent: every string and comment derived, every anchored
    node (a shared anchor such as *mqtt-ca or a `<<:` merge of one) kept as the same node, so it stays an alias."""
    if getattr(getattr(node, "anchor", None), "value", None):
        return node
    if isinstance(node, CommentedMap):
        derived = CommentedMap()
        merged = getattr(node, merge_attrib, None)
        if merged:
            derived.add_yaml_merge(_merge_of(merged))
        for key, value in node.non_merged_items():
            derived[key] = _derived_node(agent, value)
    elif isinstance(node, CommentedSeq):
        derived = CommentedSeq(_derived_node(agent, item) for item in node)
    elif isinstance(node, str):
        return type(node)(agent.derive(str(node)))  # its kind of scalar (quoted or plain) kept
    else:
        return node
    if node.fa.flow_style():
        derived.fa.set_flow_style()
    derived.ca.comment = _derived_comments(agent, node.ca.comment)
    derived.ca.items.update({key: _derived_comments(agent, tokens) for key, tokens in node.ca.items.items()})
    return derived


def _merge_of(template: MergeValue) -> MergeValue:
    """A `<<:` of the same anchored maps (`<<: *a` or `<<: [*a, *b]`): the copy merges them as aliases, and the
    template's own merge stays as written (sharing its sequence would give that sequence an anchor of its own)."""
    maps = list(template)
    merge = MergeValue()
    merge.extend(maps)
    merge.merge_pos = template.merge_pos
    if template.sequence is not None:
        sequence = CommentedSeq(maps)
        if template.sequence.fa.flow_style():
            sequence.fa.set_flow_style()
        merge.set_sequence(sequence)
    return merge


def _derived_comments(agent: AgentName, tokens: Any) -> Any:
    """Comment tokens (lists of them, nested as ruamel keeps them) copied with their text derived."""
    if isinstance(tokens, list):
        return [_derived_comments(agent, token) for token in tokens]
    if isinstance(tokens, CommentToken):
        return CommentToken(agent.derive(tokens.value), tokens.start_mark, tokens.end_mark)
    return tokens


def _insert_sorted(mapping: CommentedMap, key: str, value: Any, after: str) -> None:
    """Put `key` where it sorts among the keys (which are sorted), or right after `after` if they are not."""
    keys = list(mapping)
    position = keys.index(after) + 1 if keys != sorted(keys) else sum(1 for existing in keys if existing < key)
    mapping.insert(position, key, value)


def _dump(yaml: YAML, data: Any, path: Path) -> Path:
    """Write the edited document whole, or not at all (a failed dump leaves the file as it was)."""
    text = io.StringIO()
    yaml.dump(data, text)
    return _write(path, text.getvalue())


def _add_topology_agent(agent: AgentName, root: Path) -> Path:
    """Declare the agent in the one list of what the mesh runs (topology.yaml), where the dev runner, the PKI and the
    checks of Compose and Kubernetes read it: in sorted place, or last if the list is not sorted."""
    path = root / TOPOLOGY_FILE
    yaml = _round_trip_yaml()
    topology = yaml.load(path.read_text())
    agents = topology.get("agents")
    if not isinstance(agents, CommentedSeq):
        raise ScaffoldError(f"{TOPOLOGY_FILE} has no list of agents to add this one to")
    names = [str(name) for name in agents]
    position = sum(1 for name in names if name < agent.name) if names == sorted(names) else len(names)
    agents.insert(position, agent.name)
    return _dump(yaml, topology, path)


def _add_compose_service(agent: AgentName, root: Path) -> Path:
    path = root / "compose.yaml"
    yaml = _round_trip_yaml()
    compose = yaml.load(path.read_text())
    template = compose["services"].get(TEMPLATE_AGENT)
    if template is None:
        raise ScaffoldError(f"compose.yaml has no '{TEMPLATE_AGENT}' service to derive from")
    _insert_sorted(compose["services"], agent.name, _derived_node(agent, template), after=TEMPLATE_AGENT)
    return _dump(yaml, compose, path)


def _add_kubernetes_manifest(agent: AgentName, root: Path) -> list[Path]:
    base = root / "k8s/base"
    manifest = _write(
        base / "agents" / f"{agent.name}.yaml", agent.derive((base / "agents" / f"{TEMPLATE_AGENT}.yaml").read_text())
    )
    path = base / "kustomization.yaml"
    yaml = _round_trip_yaml()
    kustomization = yaml.load(path.read_text())
    resources = kustomization["resources"]
    entry = f"agents/{agent.name}.yaml"
    agents = [index for index, existing in enumerate(resources) if str(existing).startswith("agents/")]
    if not agents:
        raise ScaffoldError("k8s/base/kustomization.yaml lists no agent manifest among its resources")
    resources.insert(agents[0] + sum(1 for index in agents if str(resources[index]) < entry), entry)
    images = kustomization.get("images") or []
    template = [index for index, entry in enumerate(images) if entry.get("name") == f"a2a-mesh/{TEMPLATE_AGENT}"]
    if not template:
        raise ScaffoldError("k8s/base/kustomization.yaml lists no image for the template agent")
    images.insert(template[0] + 1, _derived_node(agent, images[template[0]]))
    return [manifest, _dump(yaml, kustomization, path)]
