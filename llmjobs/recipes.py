"""Recipes: YAML -> validated model -> an ordered plan of steps.

A recipe has a name, ``defaults`` (resources, params, retries, container merged into every step) and named
``steps``. ``${steps.NAME.output}`` in a step's params is NAME's output directory and implies ``after: [NAME]``.
Every error names the file, the step and the field, and says what is allowed.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmjobs import jobs
from llmjobs.cluster.container import ContainerSpec
from llmjobs.cluster.profiles import format_validation
from llmjobs.errors import UserError
from llmjobs.resources import Resources

NAME = r"^[A-Za-z][A-Za-z0-9_-]{0,99}$"  # for pydantic's (Rust) regex, where $ is the very end
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}")  # for Python: fullmatch, since there $ also matches before "\n"
NAME_RULE = "letters, digits, '_' and '-', starting with a letter, at most 100 characters"
# A recipe is a page of YAML; these bound what a mistake (or an alias bomb) can make validation chew on, and
# what lands in the registry and in every job's arguments.
MAX_RECIPE_BYTES = 1_000_000
MAX_NODES = 100_000  # scalars, lists and mappings after aliases are expanded
MAX_DEPTH = 64
REF = re.compile(r"\$\{(steps|run)\.([A-Za-z0-9_.-]+)\}")


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(..., description="what the step does: shell, python, or a kind a plugin adds")
    params: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    after: list[str] = Field(default_factory=list, description="steps that must succeed first")
    shards: int = Field(1, ge=1, le=75000, description="parallel pieces; each gets LLMJOBS_SHARD")
    retries: int = Field(0, ge=0, le=100, description="re-runs in place after a failure")
    requeues: int = Field(0, ge=0, le=100, description="requeues on timeout/preemption, for kinds that "
                          "checkpoint: the shard continues from its checkpoint directory")
    container: ContainerSpec | None = None


class Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resources: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    retries: int | None = None
    requeues: int | None = None
    container: ContainerSpec | None = None


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=NAME)
    description: str | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    steps: dict[str, StepSpec] = Field(..., min_length=1)


@dataclass
class Plan:
    """A validated recipe with its steps in dependency order."""

    recipe: Recipe
    source: str
    order: list[str]
    deps: dict[str, list[str]] = field(default_factory=dict)

    def step(self, name: str) -> StepSpec:
        return self.recipe.steps[name]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (YAML says keys are unique; PyYAML keeps the last silently)."""

    source = "recipe"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UserError(f"{self.source}: duplicate key {key!r} at line {line} (first at line {seen[key]}); "
                                "keys of a mapping must be unique: rename or remove one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _check_size(node: yaml.Node, source: str) -> None:
    """Count nodes as if every alias were expanded, without expanding them (memoised per node)."""
    sizes: dict[int, int] = {}
    depths: dict[int, int] = {}

    def walk(n: yaml.Node) -> tuple[int, int]:
        if id(n) in sizes:
            return sizes[id(n)], depths[id(n)]
        sizes[id(n)], depths[id(n)] = 1, 1  # a recursive alias counts once
        size, depth = 1, 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        for c in children:
            cs, cd = walk(c)
            size, depth = size + cs, max(depth, cd + 1)
            if depth > MAX_DEPTH:
                raise UserError(f"{source}: nested more than {MAX_DEPTH} levels deep (line {c.start_mark.line + 1})")
            if size > MAX_NODES:
                raise UserError(f"{source}: more than {MAX_NODES:,} values once YAML aliases are expanded; "
                                "a recipe this large is a mistake (or an alias bomb)")
        sizes[id(n)], depths[id(n)] = size, depth
        return size, depth

    walk(node)


def load_yaml(text: str, source: str) -> Any:
    """YAML text -> data, with unique keys and bounded size and depth; every problem is a ``UserError``."""
    loader = _StrictLoader(text)
    loader.name = loader.source = source  # marks in YAML errors name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise UserError(f"{source}: malformed YAML: {e}") from None
    except RecursionError:
        raise UserError(f"{source}: nested too deeply (more than {MAX_DEPTH} levels)") from None
    finally:
        loader.dispose()


def read_yaml_file(path: str | Path, what: str = "recipe") -> Any:
    """A YAML file (recipe or cluster profile) -> data: bounded size, UTF-8, unique keys; else ``UserError``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as e:
        raise UserError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise UserError(f"{path}: larger than {MAX_RECIPE_BYTES // 1_000_000} MB; a {what} names its data and "
                        "models by path instead of holding them")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UserError(f"{path}: not UTF-8 text (byte {e.start}, line {line}); save the {what} as UTF-8") from None
    return load_yaml(text, str(path))


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    return plan_from_dict(read_yaml_file(path, "recipe"), str(path), overrides)


def check_run_name(name: str, what: str = "--name") -> None:
    """A run's display name is free text ("my run"; the run id is made from it) on one printable line."""
    if not name.strip() or len(name) > 100 or not name.isprintable():
        raise UserError(f"{what} {name!r}: a run name is 1 to 100 printable characters on one line "
                        "(no newline, tab or control characters)")


def plan_from_dict(raw: Any, source: str, overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a recipe is a mapping with 'name' and 'steps'")
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item, source)
    raw = _merge_defaults(raw, source)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{source}: invalid recipe:\n{_describe(e)}") from None
    deps = _check_steps(recipe, source)
    return Plan(recipe=recipe, source=source, order=_toposort(deps, source), deps=deps)


def apply_override(raw: dict, item: str, source: str) -> None:
    """``--set steps.eval.params.samples=20``: the value is read as YAML (numbers, lists, booleans); a list
    element is named by its index (``steps.mix.params.sources.0.path=...``)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. steps.eval.params.samples=20")
    parts = key.strip().split(".")
    if parts[0] == "steps" and len(parts) > 1:
        steps = raw.get("steps") or {}
        if parts[1] not in steps:
            raise UserError(f"--set {item!r}: {source} has no step {parts[1]!r}; "
                            f"steps are: {', '.join(steps) or '(none)'}")
    try:
        parsed = load_yaml(value, f"--set {item!r}") if value.strip() else ""
    except UserError as e:
        if "malformed YAML" not in str(e):
            raise
        parsed = value
    node: Any = raw
    for i, part in enumerate(parts):
        where = ".".join(parts[:i + 1])
        if isinstance(node, list):  # an element of a list by its index: sources.0.path
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"--set {item!r}: {'.'.join(parts[:i])} is a list of {len(node)} in {source}; "
                                f"name an element by its index, 0 to {len(node) - 1}")
            part = int(part)
        elif not isinstance(node, dict):
            raise UserError(f"--set {item!r}: {'.'.join(parts[:i])} is not a mapping or a list in {source}")
        if i == len(parts) - 1:
            node[part] = parsed
            return
        nxt = node[part] if isinstance(node, list) else node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict | list):
            raise UserError(f"--set {item!r}: {where} is not a mapping in {source}")
        node = nxt


def _merge_defaults(raw: dict, source: str) -> dict:
    defaults = raw.get("defaults") or {}
    steps = raw.get("steps")
    if not isinstance(defaults, dict) or not isinstance(steps, dict):
        return raw  # pydantic reports the shape error
    for step in steps.values():
        if not isinstance(step, dict):
            continue
        for key in ("resources", "params"):
            base = defaults.get(key) or {}
            own = step.get(key) or {}
            if isinstance(base, dict) and isinstance(own, dict):
                step[key] = {**base, **own}
        for key in ("retries", "requeues", "container"):
            if key not in step and defaults.get(key) is not None:
                step[key] = defaults[key]
    return raw


def _describe(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        if len(loc) >= 2 and loc[0] == "steps":
            where = f"step {loc[1]!r}, field {'.'.join(loc[2:]) or '(the step)'!r}"
        else:
            where = f"field {'.'.join(loc) or '(top level)'!r}"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
            if len(loc) == 3 and loc[0] == "steps":
                msg += "; allowed: " + ", ".join(StepSpec.model_fields)
            elif len(loc) == 4 and loc[2] == "resources":
                msg += "; allowed: " + ", ".join(Resources.model_fields)
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def _check_steps(recipe: Recipe, source: str) -> dict[str, list[str]]:
    known = jobs.kinds()
    deps: dict[str, list[str]] = {}
    for name, step in recipe.steps.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise UserError(f"{source}: step name {name!r}: use {NAME_RULE}")
        if step.kind not in known:
            raise UserError(f"{source}: step {name!r}, field 'kind': unknown kind {step.kind!r}; "
                            f"allowed: {', '.join(sorted(known))}")
        try:
            jobs.validate_params(known[step.kind], step.params)
        except ValidationError as e:
            raise UserError(f"{source}: step {name!r}, field 'params' (kind {step.kind}):\n"
                            f"{format_validation(e, 'params.')}") from None
        needed = list(dict.fromkeys(step.after))
        for missing in [a for a in needed if a not in recipe.steps]:
            raise UserError(f"{source}: step {name!r}, field 'after': no step {missing!r}; "
                            f"steps are: {', '.join(recipe.steps)}")
        for kind, ref in _refs(step.params):
            if kind == "run":
                if ref not in ("dir", "id"):
                    raise UserError(f"{source}: step {name!r}, field 'params': ${{run.{ref}}} is unknown; "
                                    "allowed: ${run.dir}, ${run.id}")
                continue
            target, _, attr = ref.partition(".")
            if attr != "output":
                raise UserError(f"{source}: step {name!r}, field 'params': ${{steps.{ref}}} is not allowed; "
                                "write ${steps.NAME.output}")
            if target not in recipe.steps:
                raise UserError(f"{source}: step {name!r}, field 'params': ${{steps.{ref}}} names no step "
                                f"{target!r}; steps are: {', '.join(recipe.steps)}")
            if target == name:
                raise UserError(f"{source}: step {name!r}, field 'params': a step cannot use its own output "
                                "as input; use $LLMJOBS_OUTPUT")
            if target not in needed:
                needed.append(target)
        if name in needed:
            raise UserError(f"{source}: step {name!r}, field 'after': a step cannot come after itself")
        deps[name] = needed
    return deps


def _refs(value: Any):
    if isinstance(value, str):
        for m in REF.finditer(value):
            yield m.group(1), m.group(2)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _refs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _refs(v)


def _toposort(deps: dict[str, list[str]], source: str) -> list[str]:
    """Depth-first, in recipe order; a cycle is reported as the path that closes it."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = path[path.index(node):] + [node]
            raise UserError(f"{source}: dependency cycle: {' -> '.join(cycle)}; remove one of these "
                            "'after' entries or ${steps.X.output} references")
        state[node] = 1
        for d in deps[node]:
            visit(d, path + [node])
        state[node] = 2
        order.append(node)

    for name in deps:
        visit(name, [])
    return order


def interpolate(value: Any, outputs: dict[str, str], run: dict[str, str]) -> Any:
    """Replace ``${steps.X.output}``, ``${run.dir}`` and ``${run.id}``; leave shell ``${VAR}`` alone."""
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) == "run":
                return run[m.group(2)]
            return outputs[m.group(2).partition(".")[0]]
        return REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: interpolate(v, outputs, run) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, outputs, run) for v in value]
    return value
