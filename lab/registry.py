"""The one registry: every selectable thing (a variant on an axis, a scenario, a model preset).

A variant file registers itself with a decorator on its entry point:

    @register("attention", "gqa", config=GQAConfig, requires=("cuda",))
    def apply_(model, cfg: GQAConfig) -> None: ...

The registry feeds Hydra's ConfigStore (lab.config), so `attention=gqa` on the command line picks
the variant without any YAML, and `python -m lab list` reads the same table. Nothing else in the
lab chooses a variant by its name.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

# Axes along which techniques are swapped, then the groups that say what is run and on what.
AXES = ("attention", "position", "sampler", "kv", "quant", "spec")
GROUPS = AXES + ("scenario", "model")

# Packages whose modules register entries when imported.
_PACKAGES = {
    **{axis: f"variants.{axis}" for axis in AXES},
    "scenario": "lab.scenarios",
    "model": "lab.model.presets",
}


@dataclass(frozen=True)
class VariantConfig:
    """Base of every registered config. `name` is filled in by the registry, never by hand."""

    name: str = ""


@dataclass(frozen=True)
class Entry:
    group: str
    name: str
    config: type  # a frozen dataclass deriving from VariantConfig
    fn: Callable[..., Any]  # build(...) or apply_(...): the group decides the call
    requires: tuple[str, ...] = ()
    doc: str = ""
    reference: bool = False  # the plain, obviously-correct variant of its axis

    def default_config(self) -> VariantConfig:
        return dataclasses.replace(self.config(), name=self.name)

    def make_config(self, values: Any = None) -> VariantConfig:
        """Config from a mapping (e.g. a composed DictConfig); unknown keys raise LabError."""
        from lab.errors import LabError

        if values is None:
            return self.default_config()
        if hasattr(values, "items"):
            values = {k: v for k, v in values.items()}
        known = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise LabError(
                f"{self.group}={self.name}: unknown key(s) {unknown}; valid keys: {sorted(known - {'name'})}"
            )
        values = {k: (list(v) if _is_seq(v) else v) for k, v in values.items()}
        values["name"] = self.name
        return self.config(**values)


def _is_seq(v: Any) -> bool:
    return hasattr(v, "__iter__") and not isinstance(v, (str, bytes, dict)) and not hasattr(v, "items")


_TABLE: dict[str, dict[str, Entry]] = {g: {} for g in GROUPS}
_loaded: set[str] = set()


def register(
    group: str,
    name: str,
    *,
    config: type = VariantConfig,
    requires: tuple[str, ...] = (),
    reference: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering `fn` as `group=name`. `requires` names what must be present:
    "cuda", "triton", or an importable module name ("transformers")."""
    if group not in _TABLE:
        raise ValueError(f"unknown group {group!r}; groups are {GROUPS}")
    if not (dataclasses.is_dataclass(config) and issubclass(config, VariantConfig)):
        raise TypeError(f"{group}={name}: config must be a dataclass deriving from VariantConfig")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _TABLE[group] and _TABLE[group][name].fn is not fn:
            raise ValueError(f"{group}={name} registered twice")
        doc = (fn.__doc__ or config.__doc__ or "").strip().splitlines()
        _TABLE[group][name] = Entry(group, name, config, fn, tuple(requires), doc[0] if doc else "", reference)
        return fn

    return deco


def load(group: str | None = None) -> None:
    """Import the modules that register entries (each variant file is its own module)."""
    for g in [group] if group else GROUPS:
        if g in _loaded:
            continue
        _loaded.add(g)
        pkg = importlib.import_module(_PACKAGES[g])
        for mod in pkgutil.iter_modules(pkg.__path__ if hasattr(pkg, "__path__") else []):
            if not mod.name.startswith("_"):
                importlib.import_module(f"{pkg.__name__}.{mod.name}")


def entries(group: str) -> dict[str, Entry]:
    load(group)
    return dict(sorted(_TABLE[group].items()))


def get(group: str, name: str) -> Entry:
    from lab.errors import LabError, suggest

    table = entries(group)
    if name not in table:
        raise LabError(f"{group}={name!r} is not a registered choice{suggest(name, table)}; choices: {', '.join(table)}")
    return table[name]


def reference(group: str) -> Entry | None:
    return next((e for e in entries(group).values() if e.reference), None)


def availability(entry: Entry) -> tuple[bool, str]:
    """Whether the entry can run on this machine, and if not, why."""
    for need in entry.requires:
        if need == "cuda":
            import torch

            if not torch.cuda.is_available():
                return False, "needs a CUDA GPU (none visible)"
        elif need == "triton":
            import os

            import torch

            if importlib.util.find_spec("triton") is None:
                return False, "needs the triton package (pip install triton)"
            if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
                return False, "needs a CUDA GPU, or TRITON_INTERPRET=1 to run Triton on the CPU (slowly)"
        elif importlib.util.find_spec(need) is None:
            return False, f"needs the optional package {need!r} (pip install {need})"
    return True, ""

