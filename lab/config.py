"""Hydra configuration: the ConfigStore is filled from the registry, experiments from experiments/.

Groups: one per axis (attention, position, sampler, kv, quant, spec), plus model, scenario, device
and measure. Each registered variant is a typed node, so `attention=mla attention.rank=64` is
checked against MLAConfig's fields. Experiments are YAML files selected with `+experiment=NAME`.

Composition goes through Hydra's compose API, point by point: the runner expands sweeps itself so it
can validate every point before any work, skip finished points on resume, and keep going when one
fails. Every composition error is translated into one LabError naming the key, the value and the
valid choices.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from lab import registry
from lab.errors import LabError, suggest
from lab.measure.timing import MeasureConfig
from lab.registry import AXES, GROUPS

REPO = Path(__file__).resolve().parent.parent


def experiments_dir() -> Path:
    return Path(os.environ.get("LAB_EXPERIMENTS_DIR", REPO / "experiments"))


@dataclass
class DeviceConfig:
    type: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    index: int = 0


@dataclass
class CorpusConfig:
    path: Optional[str] = None  # a UTF-8 text file; None = Python's pydoc_data.topics
    max_tokens: int = 4096  # tokens of the corpus scored (from its start)


MEASURE_PRESETS = {
    "default": MeasureConfig(),
    # quick: enough samples (>= 5 a side) for the regression gate's rank test to reach p < 0.01
    "quick": MeasureConfig(reps=10, min_reps=6, warmup_ms=20.0, max_time_s=2.0, bootstrap=500),
    "thorough": MeasureConfig(reps=200, min_reps=20, warmup_ms=1000.0, max_time_s=30.0),
}
DEVICE_PRESETS = {"auto": DeviceConfig(), "cpu": DeviceConfig(type="cpu"), "cuda": DeviceConfig(type="cuda")}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
OTHER_GROUPS = ("device", "measure")


def _defaults() -> list:
    out: list[Any] = ["_self_", {"model": "smollm2_135m"}, {"scenario": "prefill"}, {"device": "auto"}, {"measure": "default"}]
    for axis in AXES:
        ref = registry.reference(axis)
        if ref is None:
            raise RuntimeError(f"axis {axis!r} has no reference variant registered")
        out.append({axis: ref.name})
    return out


@dataclass
class LabConfig:
    defaults: List[Any] = field(default_factory=_defaults)
    experiment: str = "adhoc"
    run_id: Optional[str] = None  # default: a timestamp; pass an existing one to resume
    seed: int = 0
    size: str = "auto"  # auto | small | full
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    sweep: List[Any] = field(default_factory=list)  # list of override lists: one point each
    results_dir: str = "results"
    reports_dir: str = "reports"
    report: bool = True
    progress: bool = True
    # filled by the chosen group nodes
    model: Any = None
    scenario: Any = None
    device: Any = None
    measure: Any = None
    attention: Any = None
    position: Any = None
    sampler: Any = None
    kv: Any = None
    quant: Any = None
    spec: Any = None


def _node(obj: Any) -> DictConfig:
    node = OmegaConf.structured(obj)
    OmegaConf.set_readonly(node, False)  # experiments may set a variant's fields
    return node


def store() -> None:
    """Fill Hydra's ConfigStore from the registry, the presets and experiments/*.yaml (cheap, and
    repeated on every composition so that entries registered later are seen)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    for group in GROUPS:
        for name, entry in registry.entries(group).items():
            cs.store(group=group, name=name, node=_node(entry.default_config()))
    for name, dev in DEVICE_PRESETS.items():
        cs.store(group="device", name=name, node=_node(dev))
    for name, m in MEASURE_PRESETS.items():
        cs.store(group="measure", name=name, node=_node(m))
    for path in sorted(experiments_dir().glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")
    cs.store(name="lab", node=LabConfig)


def experiment_names() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def choices(group: str) -> list[str]:
    if group == "device":
        return list(DEVICE_PRESETS)
    if group == "measure":
        return list(MEASURE_PRESETS)
    if group == "experiment":
        return experiment_names()
    return list(registry.entries(group))


# ---------------------------------------------------------------------------------------------
# Overrides: expansion of sweeps, and one clear error per bad input
# ---------------------------------------------------------------------------------------------
def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # Hydra's grammar errors
        raise LabError(f"cannot parse overrides {overrides}: {str(e).splitlines()[0]}") from None


def _check_choice(key: str, value: str) -> None:
    group = key.lstrip("+~")
    valid = choices(group)
    if value not in valid:
        what = "experiment" if group == "experiment" else f"choice for {group}"
        raise LabError(f"{group}={value!r} is not a known {what}{suggest(value, valid)}; valid choices: {', '.join(valid)}")


def expand(overrides: list[str]) -> list[list[str]]:
    """Command-line overrides, with Hydra sweeps (`a,b`, `range(…)`, `choice(…)`), as a list of
    plain override lists (their cartesian product)."""
    axes: list[list[str]] = []
    for ov in _parse(overrides):
        key = ov.get_key_element()
        values = list(ov.sweep_string_iterator()) if ov.is_sweep_override() else [ov.get_value_element_as_str()]
        group = key.lstrip("+~")
        if group in GROUPS + OTHER_GROUPS + ("experiment",) and "." not in group:
            for v in values:
                _check_choice(key, v)
        axes.append([f"{key}={v}" for v in values])
    return [list(p) for p in itertools.product(*axes)] if axes else [[]]


_TOP_KEYS = [f.name for f in dataclasses.fields(LabConfig) if f.name != "defaults"]


def _explain(e: Exception, overrides: list[str]) -> LabError:
    """Translate a Hydra/OmegaConf composition error into one message with the valid choices."""
    msg = str(e)
    cause = e.__cause__ or e.__context__
    m = re.search(r"Could not override '([^']+)'", msg)
    if m:
        key = m.group(1)
        head, _, leaf = key.rpartition(".")
        if not head:
            return LabError(f"unknown key {key!r}{suggest(key, _TOP_KEYS)}; top-level keys: {', '.join(_TOP_KEYS)}")
        return _unknown_subkey(head, leaf, overrides)
    m = re.search(r"Key '([^']+)' not in '(\w+)'", msg) or re.search(r"Key '([^']+)' is not in struct", msg)
    if m:
        fk = re.search(r"full_key: ([\w.]+)", msg)
        full = fk.group(1) if fk else m.group(1)
        head, _, leaf = full.rpartition(".")
        return _unknown_subkey(head, leaf, overrides)
    m = re.search(r"Error merging override (\S+)", msg)
    if m:
        why = str(cause).splitlines()[0] if cause else msg.splitlines()[0]
        return LabError(f"bad value in {m.group(1)}: {why}")
    m = re.search(r"Could not find '(\w+)/([^']+)'", msg)
    if m:
        try:
            _check_choice(m.group(1), m.group(2))
        except LabError as le:
            return le
    return LabError(f"cannot compose the configuration from {overrides}: {msg.splitlines()[0]}")


def _unknown_subkey(head: str, leaf: str, overrides: list[str]) -> LabError:
    group = head.split(".")[0]
    if group in GROUPS + OTHER_GROUPS:
        chosen = next((o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=")[0] == group), None)
        try:
            cfg = compose_raw([o for o in overrides if "." not in o.split("=")[0]])
            chosen = chosen or (cfg[group].name if "name" in cfg[group] else group)
            keys = [k for k in cfg[group].keys() if k != "name"]
        except Exception:
            keys = []
        return LabError(f"{group}={chosen} has no key {leaf!r}{suggest(leaf, keys)}; its keys: {', '.join(keys) or '(none)'}")
    if group == "corpus":
        keys = [f.name for f in dataclasses.fields(CorpusConfig)]
        return LabError(f"corpus has no key {leaf!r}{suggest(leaf, keys)}; its keys: {', '.join(keys)}")
    return LabError(f"unknown key {head}.{leaf}")


def compose_raw(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize
    from hydra.core.global_hydra import GlobalHydra

    store()
    GlobalHydra.instance().clear()
    with initialize(version_base=None):
        return compose("lab", overrides=overrides)


def compose_point(overrides: list[str]) -> DictConfig:
    """One point's config, or one LabError."""
    for ov in overrides:
        key, _, value = ov.partition("=")
        if key.lstrip("+~") in GROUPS + OTHER_GROUPS + ("experiment",):
            _check_choice(key, value)
    try:
        return compose_raw(overrides)
    except LabError:
        raise
    except Exception as e:
        raise _explain(e, overrides) from None


def points(overrides: list[str]) -> list[tuple[list[str], DictConfig]]:
    """Every point of a run: command-line sweeps × the experiment's `sweep` entries."""
    out = []
    for combo in expand(overrides):
        base = compose_point(combo)
        entries = list(base.sweep) if base.sweep else [[]]
        for entry in entries:
            extra = [str(x) for x in entry] if not isinstance(entry, str) else [entry]
            ov = combo + extra
            out.append((ov, compose_point(ov) if extra else base))
    return out


# ---------------------------------------------------------------------------------------------
# From a composed config to what the runner needs
# ---------------------------------------------------------------------------------------------
@dataclass
class Point:
    overrides: list[str]
    cfg: DictConfig
    choices: dict[str, registry.VariantConfig]
    device: torch.device
    dtype: torch.dtype
    measure: MeasureConfig
    size: str

    @property
    def columns(self) -> dict[str, Any]:
        """The variant and parameter columns of every row of this point."""
        cols: dict[str, Any] = {g: c.name for g, c in self.choices.items() if g in AXES + ("model",)}
        for group, c in self.choices.items():
            entry = registry.get(group, c.name)
            default = entry.default_config()
            for f in dataclasses.fields(c):
                if f.name != "name" and getattr(c, f.name) != getattr(default, f.name):
                    v = getattr(c, f.name)
                    cols[f"{group}.{f.name}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
        cols["device"] = str(self.device)
        cols["dtype"] = str(self.dtype).replace("torch.", "")
        return cols


def resolve(overrides: list[str], cfg: DictConfig) -> Point:
    chosen = {}
    for group in GROUPS:
        node = cfg[group]
        chosen[group] = registry.get(group, node.name).make_config(OmegaConf.to_container(node, resolve=True))
    dev = cfg.device
    if dev.type == "auto":
        device = torch.device("cuda", dev.index) if torch.cuda.is_available() else torch.device("cpu")
    elif dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LabError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
        device = torch.device("cuda", dev.index)
    elif dev.type == "cpu":
        device = torch.device("cpu")
    else:
        raise LabError(f"device.type={dev.type!r}; valid: auto, cpu, cuda")
    if dev.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif dev.dtype in DTYPES:
        dtype = DTYPES[dev.dtype]
    else:
        raise LabError(f"device.dtype={dev.dtype!r}; valid: auto, {', '.join(DTYPES)}")
    measure = MeasureConfig(**OmegaConf.to_container(cfg.measure, resolve=True))
    size = cfg.size if cfg.size != "auto" else ("full" if device.type == "cuda" else "small")
    if size not in ("small", "full"):
        raise LabError(f"size={cfg.size!r}; valid: auto, small, full")
    return Point(overrides, cfg, chosen, device, dtype, measure, size)


def validate(point: Point) -> None:
    """Checks that need no weights: availability of every chosen entry on this machine, and each
    config's own `validate(args)` against the model's shape (read from metadata only)."""
    for group, c in point.choices.items():
        entry = registry.get(group, c.name)
        ok, why = registry.availability(entry)
        if ok and point.device.type != "cuda" and "cuda" in entry.requires:
            ok, why = False, "needs a CUDA GPU"
        if not ok:
            raise LabError(f"{group}={c.name} cannot run here: {why}")
    model_cfg = point.choices["model"]
    args = model_cfg.model_args() if hasattr(model_cfg, "model_args") else None
    if args is not None:
        need = args.weight_bytes(torch.finfo(point.dtype).bits // 8)
        have = available_memory(point.device)
        if have is not None and need > 0.9 * have:
            raise LabError(
                f"model={model_cfg.name} needs {need / 1e9:.1f} GB of {str(point.dtype).removeprefix('torch.')} weights; "
                f"{point.device} has {have / 1e9:.1f} GB available: use a GPU (device=cuda), device.dtype=bfloat16, "
                f"or a smaller model (model=smollm2_135m, llama32_1b, qwen25_05b)")
    for group, c in point.choices.items():
        if hasattr(c, "validate") and args is not None:
            c.validate(args)
    if point.cfg.corpus.path and not Path(point.cfg.corpus.path).expanduser().is_file():
        raise LabError(f"corpus.path={point.cfg.corpus.path!r}: no such file; give a path to a UTF-8 text file")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for the weights: CUDA's free memory, or the OS's MemAvailable on a CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kb * 1024
    except (OSError, StopIteration, ValueError):
        return None
