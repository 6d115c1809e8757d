"""Building typed configs from YAML and key=value overrides: coercion, Literal choices, unknown keys, hashing."""
from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A user mistake in a config file or override; the CLI prints it as one line, exit 2."""


INTERNAL = {"internal": True}


def internal(default: Any) -> Any:
    """A field the code sets (fold of a cross-fitted model, warm-start folder): not a user key.
    A list default is copied per instance."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=INTERNAL)
    return dataclasses.field(default=default, metadata=INTERNAL)


def is_internal(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("internal"))


def subset(cls: type, obj: Any, partial: bool = False) -> Any:
    """An instance of dataclass `cls` from the same-named fields of `obj` (a stage config -> a pure-code settings
    object, without copying fields by hand); partial=True leaves the fields `obj` lacks at their defaults."""
    return cls(**{f.name: getattr(obj, f.name) for f in dataclasses.fields(cls) if not partial or hasattr(obj, f.name)})


# ---------------------------------------------------------------- building from dicts

def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value against a field type; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (list, list):
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict and validate it; unknown or internal keys raise ConfigError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not is_internal(f)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}' (valid: {', '.join(sorted(names))})")
    data = dict(data)
    for f in dataclasses.fields(cls):
        # A partial nested section starts from the field's own default, not its class's: SegmentConfig's
        # compute (batch 4) given only compute.num_actors=2 must keep its batch of 4.
        if isinstance(data.get(f.name), dict) and f.default_factory is not dataclasses.MISSING:
            base = f.default_factory()
            if dataclasses.is_dataclass(base):
                data[f.name] = deep_merge(to_dict(base, internal_keys=False), data[f.name])
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    obj = cls(**kwargs)
    if hasattr(obj, "validate"):  # nested configs validated themselves as they were built
        obj.validate(prefix)
    return obj


def to_dict(obj: Any, internal_keys: bool = True) -> dict:
    """The dataclass as a plain nested dict (JSON, MLflow params, fingerprints); a dict passes through.
    internal_keys=False leaves out the fields the code sets (what a user may write back as a config file)."""
    if isinstance(obj, dict):
        return dict(obj)
    if internal_keys:
        return dataclasses.asdict(obj)
    out = {}
    for f in dataclasses.fields(obj):
        if not is_internal(f):
            value = getattr(obj, f.name)
            out[f.name] = to_dict(value, False) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists become comma-joined strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out


def parse_overrides(pairs: list[str]) -> dict:
    """['a.b=3', 'c=x'] -> {'a': {'b': '3'}, 'c': 'x'} (values typed later against the schema)."""
    out: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' is not key=value")
        key, value = pair.split("=", 1)
        if not key:
            raise ConfigError(f"override '{pair}' has an empty key")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}' conflicts with another override")
        node[parts[-1]] = _yaml_scalar(value)
    return out


def _yaml_scalar(text: str) -> Any:
    """Parse an override value the way YAML would ('3' -> 3, '[1,2]' -> [1, 2], 'a' -> 'a')."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def deep_merge(base: dict, extra: dict) -> dict:
    """Recursive dict merge; `extra` wins."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def read_yaml(path: str) -> dict:
    """Read a YAML config file (local or cloud URI) into a dict."""
    from inetseg import storage

    if not storage.exists(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(storage.read_text(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top")
    return data


def load(cls: type, config_file: str | None = None, overrides: list[str] | None = None,
         section: str | None = None) -> Any:
    """Defaults <- YAML file (or its `section` when the file is a pipeline config) <- key=value."""
    data: dict = {}
    if config_file:
        data = read_yaml(config_file)
        if section and isinstance(data.get(section), dict):  # a pipeline file: this stage's section
            data = data[section]
    data = deep_merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data)


def dump_yaml(obj: Any) -> str:
    """The resolved config as YAML (saved with every run; a valid --config file: no internal keys)."""
    return yaml.safe_dump(to_dict(obj, internal_keys=False), sort_keys=False)


def fingerprint(obj: Any) -> str:
    """A stable hash of a config, used to decide whether a finished stage can be reused."""
    import hashlib

    blob = json.dumps(to_dict(obj), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ---------------------------------------------------------------- value checks

def check(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless cond: the one-line form every config's validate() uses."""
    if not cond:
        raise ConfigError(msg)


def validate(obj: Any, prefix: str = "") -> None:
    """Run obj's own validate(prefix) and those of its nested configs (each dataclass checks itself)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
    if hasattr(obj, "validate"):
        obj.validate(prefix)
