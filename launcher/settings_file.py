"""Settings files and ``--set NAME=VALUE`` pairs: repeatable runs without editing the script.

A settings file is a flat mapping of setting and hyperparameter names to values, in TOML
(``epochs = 5``), YAML (``epochs: 5``, needs PyYAML) or JSON; its values override the job's
class attributes, and command-line options override the file. Names are checked later, against
the job, so an unknown name is reported with the job's own hyperparameters listed.
"""

from __future__ import annotations

import json
import os


class SettingsFileError(ValueError):
    """A settings file or a ``--set`` pair that cannot be read; the message names it."""


def _parse(path: str, text: str) -> object:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise SettingsFileError(f"{path}: reading TOML on Python 3.10 needs tomli "
                                        "(pip install tomli), or use a .yaml/.json file") from None
        return tomllib.loads(text)
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SettingsFileError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), "
                                    "or use a .toml file") from None
        return yaml.safe_load(text)
    if suffix == ".json":
        return json.loads(text)
    raise SettingsFileError(f"{path}: unknown settings file type {suffix or '(none)'!r}; "
                            "use .toml, .yaml, .yml or .json")


def read_settings_file(path: str) -> dict:
    """The name -> value mapping of a TOML, YAML or JSON settings file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SettingsFileError(f"cannot read settings file {path}: {e.strerror}") from None
    try:
        data = _parse(path, text)
    except SettingsFileError:
        raise
    except Exception as e:  # noqa: BLE001 - each parser has its own error types
        raise SettingsFileError(f"{path} is not valid: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SettingsFileError(f"{path}: expected a mapping of names to values at the top, "
                                f"got {type(data).__name__}")
    nested = sorted(k for k, v in data.items() if isinstance(v, (dict, list)))
    if nested:
        raise SettingsFileError(f"{path}: {', '.join(map(str, nested))} must be plain values "
                                "(numbers, booleans or text), not tables or lists")
    return {str(k): v for k, v in data.items()}


def parse_set_pairs(pairs: tuple[str, ...] | list[str]) -> dict:
    """``['lr=0.05', 'epochs=3']`` -> ``{'lr': '0.05', 'epochs': '3'}`` (text, typed later)."""
    values = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name.isidentifier():
            raise SettingsFileError(f"--set {pair!r}: expected NAME=VALUE, e.g. --set lr=0.05")
        values[name] = value.strip()
    return values
