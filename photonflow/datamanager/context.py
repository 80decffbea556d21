"""Context files: the functions that compute a run table's columns, in European XFEL DAMNIT's API.

A context file is Python with functions decorated by :class:`Variable`; each takes a
:class:`RunData` and returns a value (number, string, array) or a :class:`Cell`. Arguments
annotated ``"var#name"`` receive another variable's result, ``"meta#run_number"`` (and
``meta#proposal``, ``meta#proposal_path``, ``meta#role``, ``meta#node``, ``meta#sample``) the
run's facts, ``"mymdc#sample_name"`` / ``"mymdc#run_type"`` the sample and the structure role.
A DAMNIT context moves over by changing only its data-access lines (``run[source, key]`` becomes
``run.frames``, ``run.metadata(path)`` or ``run.time_series(name)``).

:func:`load_context` imports the file and refuses a bad one with file, line and reason
(:class:`~photonflow.errors.ConfigurationError`): a syntax error, an exception while importing,
an unknown ``var#`` dependency, a cycle, a bad ``data=``/``tags=``/``units=``.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import inspect
import os
import re
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

import numpy as np

from photonflow.errors import ConfigurationError, FilePathError

__all__ = ["Cell", "ContextFile", "DependencyError", "RunData", "Skip", "Variable", "load_context"]

META_ARGUMENTS = ("run_number", "proposal", "proposal_path", "role", "node", "sample")
MYMDC_ARGUMENTS = ("sample_name", "run_type", "techniques")


class Skip(Exception):
    """Raised by a variable that has nothing to say for this run (DAMNIT's ``Skip``): recorded
    as skipped, not as an error, and the variables that depend on it are skipped too."""


class DependencyError(RuntimeError):
    """A variable was not computed because a variable it depends on failed."""


def _is_instance_no_import(obj: Any, module: str, name: str) -> bool:
    loaded = sys.modules.get(module)
    return loaded is not None and isinstance(obj, getattr(loaded, name))


def _is_figure(obj: Any) -> bool:
    return _is_instance_no_import(obj, "matplotlib.figure", "Figure")


class Variable:
    """Marks a function of a run as a run-table column (DAMNIT's decorator, same arguments).

    ``summary``: the numpy function (``"mean"``, ``"max"``, ...) that reduces an array result to
    the table's value. ``data``: ``"raw"`` (default) or ``"proc"``. ``cluster``: heavy, sent to the
    Dask cluster when one is given. ``transient``: computed for the variables that depend on it,
    never stored.
    """

    def __init__(self, title=None, description=None, summary=None, data=None, cluster=False,
                 tags=None, transient=False, units=None):
        self.tags = (tags,) if isinstance(tags, str) else tags
        self.description = description
        self.summary = summary
        self.cluster = cluster
        self.transient = transient
        self.units = units
        self._data = data
        self.func: Callable[..., Any] | None = None  # set when it decorates the function
        self.name: str | None = None
        if callable(title):  # @Variable without parentheses
            self.title = None
            self(title)
        else:
            self.title = title

    def __call__(self, func):
        self.func = func
        self.name = func.__name__
        if self.title is None:
            self.title = self.name
        if self.description is None:
            self.description = inspect.getdoc(func)
        return self

    @property
    def data(self) -> str:
        return "raw" if self._data is None else self._data

    @property
    def line(self) -> int:
        """The line of the definition in the context file (its first decorator)."""
        code = getattr(self.func, "__code__", None)
        return code.co_firstlineno if code is not None else 0

    def check(self) -> list[str]:
        problems = []
        if self._data not in (None, "raw", "proc"):
            problems.append(f"data={self._data!r} (can be 'raw' or 'proc')")
        if self.tags is not None and (
                not isinstance(self.tags, Iterable)
                or not all(isinstance(tag, str) and tag for tag in self.tags)):
            problems.append(f"tags={self.tags!r} (a non-empty string or an iterable of strings)")
        if self.units is not None and (not isinstance(self.units, str) or not self.units):
            problems.append(f"units={self.units!r} (a non-empty string)")
        if self.summary is not None and not (
                isinstance(self.summary, str) and callable(getattr(np, self.summary, None))):
            problems.append(f"summary={self.summary!r} (the name of a numpy function such as 'mean' or 'max')")
        for argument, annotation in self.annotations().items():
            if annotation.startswith("meta#") and annotation.removeprefix("meta#") not in META_ARGUMENTS:
                problems.append(f"argument {argument!r}: unknown {annotation!r} "
                                f"(meta# can be {', '.join(META_ARGUMENTS)})")
            elif annotation.startswith("mymdc#") and annotation.removeprefix("mymdc#") not in MYMDC_ARGUMENTS:
                problems.append(f"argument {argument!r}: unknown {annotation!r} "
                                f"(mymdc# can be {', '.join(MYMDC_ARGUMENTS)})")
            elif not annotation.startswith(("var#", "meta#", "mymdc#")):
                problems.append(f"argument {argument!r}: unknown annotation {annotation!r} "
                                "(var#name, meta#... or mymdc#...)")
        return problems

    def annotations(self) -> dict[str, str]:
        """The string annotations of the function's arguments (var#, meta#, mymdc#)."""
        annotations = getattr(self.func, "__annotations__", {})
        return {arg: _unquoted(value) for arg, value in annotations.items()
                if isinstance(value, str) and arg != "return"}

    def arg_dependencies(self, prefix: str = "var#") -> dict[str, str]:
        """Argument name -> dependency name, for the annotations starting with ``prefix``."""
        return {arg: value.removeprefix(prefix) for arg, value in self.annotations().items()
                if value.startswith(prefix)}

    def evaluate(self, run: RunData, kwargs: dict[str, Any]) -> Cell:
        """Calls the function; wraps its result in a :class:`Cell` (which refuses what HDF5 and
        the table cannot hold: a TypeError that is recorded for the cell)."""
        if self.func is None:
            raise ConfigurationError(f"variable {self.title!r} decorates no function")
        cell = self.func(run, **kwargs)
        if not isinstance(cell, Cell):
            cell = Cell(cell, _check=not self.transient)
        if cell.summary is None:
            cell.summary = self.summary
        if cell.units is None:
            cell.units = self.units
        return cell


def _unquoted(annotation: str) -> str:
    """``"'var#x'"`` -> ``"var#x"``: under ``from __future__ import annotations`` a string
    annotation arrives quoted once more."""
    if len(annotation) >= 2 and annotation[0] == annotation[-1] and annotation[0] in "'\"":
        try:
            value = ast.literal_eval(annotation)
        except (ValueError, SyntaxError):
            return annotation
        return value if isinstance(value, str) else annotation
    return annotation


class Cell:
    """A variable's result with how the table shows it (DAMNIT's ``Cell``): ``data`` (stored in
    full), ``summary`` (numpy function name) or ``summary_value`` (the table's value as is),
    ``bold``, ``background`` ('#rrggbb' or an RGB triple), ``preview`` (a 1D/2D array or a
    figure shown on double-click) and ``units``."""

    def __init__(self, data, summary=None, summary_value=None, bold=None, background=None, *,
                 preview=None, units=None, _check=True):
        if _check:
            data = _storable(data)
        if summary_value is not None and not isinstance(summary_value, str):
            summary_value = np.asarray(summary_value)
            if summary_value.dtype.hasobject or summary_value.ndim != 0:
                raise TypeError(f"summary_value should be a number or a string, not {summary_value!r}")
        if preview is not None:
            if isinstance(preview, np.ndarray):
                if preview.ndim not in (1, 2):
                    raise TypeError(f"preview should be a 1D or 2D array (shape is {preview.shape})")
                if not (np.issubdtype(preview.dtype, np.number) or preview.dtype == bool):
                    raise TypeError("preview array should be numeric")
            elif not _is_figure(preview):
                raise TypeError(f"preview must be an array or a figure object (got {type(preview).__name__})")
        if units is not None and not isinstance(units, str):
            raise TypeError(f"units should be a string, not {type(units).__name__}")
        self.data = data
        self.summary = summary
        self.summary_value = summary_value
        self.bold = bold
        self.background = self._normalize_colour(background)
        self.preview = preview
        self.units = units

    @staticmethod
    def _normalize_colour(colour):
        if colour is None:
            return None
        if isinstance(colour, str):
            if not re.fullmatch(r"#[0-9A-Fa-f]{6}", colour):
                raise ValueError("Colour string should be hex code (like '#ffcc00')")
            return np.frombuffer(bytes.fromhex(colour[1:]), dtype=np.uint8)
        if isinstance(colour, Sequence):
            if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
                raise ValueError("background should be three values 0..255 (R, G, B)")
            return np.array(colour, dtype=np.uint8)
        raise TypeError(f"Don't understand colour as {type(colour).__name__}")

    def get_summary(self) -> Any:
        """The run table's value: ``summary_value``; else ``summary`` applied to the data; else a
        scalar or a string as is; else a description of the array (dtype and shape)."""
        if self.summary_value is not None:
            return _plain(self.summary_value)
        data = self.data
        if data is None:
            return None
        if isinstance(data, str):
            return data
        if _is_figure(data):
            return "figure"
        if self.summary is not None:
            return _plain(np.asarray(getattr(np, self.summary)(data)))
        if data.ndim == 0:
            return _plain(data)
        return f"{data.dtype}: {data.shape}"

    def summary_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.summary is not None:
            attrs["summary_method"] = self.summary
        if self.bold is not None:
            attrs["bold"] = bool(self.bold)
        if self.background is not None:
            attrs["background"] = self.background
        if self.units is not None:
            attrs["units"] = self.units
        return attrs


def _storable(data: Any) -> Any:
    """What HDF5 and the table can hold: None, a string, a figure, or a numeric/bool/bytes array."""
    if data is None or isinstance(data, str) or _is_figure(data):
        return data
    array = np.asarray(data)
    if array.dtype.hasobject:
        raise TypeError(f"Returned data type {type(data).__name__} cannot be saved "
                        "(return a number, a string, a numeric array or a Cell)")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype.kind in "bS"):
        raise TypeError(f"Returned data type {type(data).__name__} whose array type {array.dtype} "
                        "cannot be saved")
    return array


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python number (or string), for the catalogue and JSON."""
    array = np.asarray(value)
    if array.ndim == 0:
        item = array.item()
        return item.decode() if isinstance(item, bytes) else item
    return array


@dataclass
class RunData:
    """What a variable gets for one run: its facts, its raw frames and its standardized file.

    ``frames`` opens the Recorder file read-only on first use (``/entry/data/data``), so a
    context whose variables need only metadata never touches the frames; a process forked after
    opening reopens it.
    """

    number: int
    proposal: str = ""
    role: str = ""
    node: str = ""
    sample: str = ""
    raw_file: str = ""
    nexus: str = ""

    def __post_init__(self):
        self._files: dict[str, Any] = {}
        self._opened_by = os.getpid()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunData:
        known = {"number", "proposal", "role", "node", "sample", "raw_file", "nexus"}
        values = dict(values)
        if "run" in values and "number" not in values:
            values["number"] = values.pop("run")
        if "nexus_file" in values and "nexus" not in values:
            values["nexus"] = values.pop("nexus_file")
        return cls(**{key: value for key, value in values.items() if key in known})

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "proposal": self.proposal, "role": self.role, "node": self.node,
                "sample": self.sample, "raw_file": self.raw_file, "nexus": self.nexus}

    def _file(self, path: str, what: str):
        # hdf5plugin registers the bitshuffle/LZ4 filter (EIGER's bslz4 frames) before h5py opens
        # anything; this runs in the variables process and on a Dask worker alike.
        import h5py
        import hdf5plugin  # noqa: F401

        from photonflow.standardizing.standard_files import require_virtual_sources

        if not path:
            raise FileNotFoundError(f"run {self.number} has no {what} file")
        if self._opened_by != os.getpid():
            self._files, self._opened_by = {}, os.getpid()
        if path not in self._files:
            opened = h5py.File(path, "r")
            try:  # a standardized file moved away from the frames it points to reads zeros: refuse it
                require_virtual_sources(opened)
            except FilePathError:
                opened.close()
                raise
            self._files[path] = opened
        return self._files[path]

    @property
    def frames(self):
        """The raw frames (an h5py dataset: slice it, ``run.frames[:]`` reads them all)."""
        return self._file(self.raw_file, "raw")["entry/data/data"]

    @property
    def proposal_path(self) -> str:
        return str(Path(self.raw_file).parent) if self.raw_file else ""

    def metadata(self, path: str) -> Any:
        """A field of the standardized entry, e.g. ``"instrument/beam/incident_wavelength"``:
        scalars as Python values (text decoded), arrays as numpy arrays."""
        entry = self._file(self.nexus, "standardized (NeXus)")["entry"]
        path = path.strip("/")
        if path not in entry:
            raise KeyError(f"{self.nexus} has no /entry/{path}")
        value = entry[path][()]
        return _plain(value) if np.ndim(value) == 0 else value

    def metadata_attrs(self, path: str) -> dict[str, Any]:
        """The HDF5 attributes of a field of the standardized entry (``units``, ``depends_on``...)."""
        entry = self._file(self.nexus, "standardized (NeXus)")["entry"]
        return {key: _plain(value) for key, value in entry[path.strip("/")].attrs.items()}

    def time_series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(times, values)`` of a value logged while the frames were taken, e.g.
        ``"source/current"`` (times in seconds from the series start)."""
        during = self._file(self.nexus, "standardized (NeXus)")["entry"].get("during_exposure")
        log = None if during is None else during.get(name.strip("/"))
        if log is None:
            raise KeyError(f"{self.nexus} logged no {name!r} during the exposure (/entry/during_exposure)")
        return log["time"][()], log["value"][()]

    def close(self) -> None:
        for opened in self._files.values():
            opened.close()
        self._files = {}

    def argument(self, annotation: str) -> Any:
        """The value of a ``meta#`` or ``mymdc#`` argument."""
        return {
            "meta#run_number": self.number, "meta#proposal": self.proposal,
            "meta#proposal_path": self.proposal_path, "meta#role": self.role, "meta#node": self.node,
            "meta#sample": self.sample, "mymdc#sample_name": self.sample, "mymdc#run_type": self.role,
            "mymdc#techniques": [],
        }[annotation]


class ContextFile:
    """The variables of a context file, checked, in dependency order."""

    def __init__(self, variables: dict[str, Variable], path: str = "<string>", code: str = ""):
        self.vars = variables
        self.path = path
        self.code = code
        problems = []
        for name, var in variables.items():
            problems += [f"{path}:{var.line}: variable {name}: {problem}" for problem in var.check()]
            for argument, dependency in var.arg_dependencies().items():
                if not fnmatch.filter(variables, dependency):
                    problems.append(f"{path}:{var.line}: variable {name}: argument {argument!r} depends on "
                                    f"'var#{dependency}', which the context does not define")
        titles = [var.title for var in variables.values()]
        for name, var in variables.items():
            if titles.count(var.title) > 1:
                problems.append(f"{path}:{var.line}: variable {name}: title {var.title!r} is used twice")
        if problems:
            raise ConfigurationError("\n".join(problems))
        try:
            self._order = self.ordered_vars()
        except CycleError as error:
            cycle = error.args[1]
            first = variables[cycle[0]]
            raise ConfigurationError(
                f"{path}:{first.line}: variable {cycle[0]}: cyclical dependencies, which are not "
                f"allowed: {' -> '.join(cycle)}") from None
        for name in self._order:  # a variable needing proc data or the cluster makes its dependents so
            var = variables[name]
            dependencies = [variables[dep] for dep in self.direct_dependencies(var)]
            if var._data is None and any(dep.data == "proc" for dep in dependencies):
                var._data = "proc"
            if any(dep.cluster for dep in dependencies):
                var.cluster = True

    def direct_dependencies(self, variable: Variable) -> set[str]:
        names: set[str] = set()
        for dependency in variable.arg_dependencies().values():
            names.update(fnmatch.filter(self.vars, dependency))
        return names

    def all_dependencies(self, *variables: Variable) -> set[str]:
        names: set[str] = set()
        for var in variables:
            direct = self.direct_dependencies(var)
            names |= direct
            names |= self.all_dependencies(*(self.vars[dep] for dep in direct))
        return names

    def ordered_vars(self) -> tuple[str, ...]:
        sorter: TopologicalSorter[str] = TopologicalSorter()
        for name, var in self.vars.items():
            sorter.add(name, *sorted(self.direct_dependencies(var)))
        return tuple(sorter.static_order())

    def filter(self, *, only: Iterable[str] | None = None, data: str | None = None,
               cluster: bool | None = None) -> ContextFile:
        """The selected variables and everything they depend on."""
        only = set(only) if only else None
        unknown = (only or set()) - set(self.vars)
        if unknown:
            raise ConfigurationError(f"{self.path}: no variable called {', '.join(sorted(unknown))} "
                                     f"(the context defines {', '.join(self.vars)})")
        chosen = {name: var for name, var in self.vars.items()
                  if (only is None or name in only) and (data is None or var.data == data)
                  and (cluster is None or var.cluster == cluster)}
        chosen.update({name: self.vars[name] for name in self.all_dependencies(*chosen.values())})
        return ContextFile(chosen, self.path, self.code)

    def vars_to_dict(self, inc_transient: bool = False) -> dict[str, dict[str, Any]]:
        return {name: {"title": var.title, "description": var.description,
                       "tags": list(var.tags) if var.tags else [], "units": var.units,
                       "summary": var.summary, "cluster": var.cluster, "data": var.data}
                for name, var in self.vars.items() if inc_transient or not var.transient}


def _error_line(path: str, error: BaseException) -> int:
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename == path:
            return frame.lineno or 0
    return 0


def load_context(path: str | os.PathLike) -> ContextFile:
    """Imports a context file as a module and collects its variables; refuses a bad file with
    ``ConfigurationError("file:line: reason")``."""
    path = str(Path(path).resolve())
    try:
        code = Path(path).read_text()
    except OSError as error:
        raise ConfigurationError(f"{path}:0: cannot read the context file: {error.strerror}") from None
    try:
        compiled = compile(code, path, "exec", dont_inherit=True)
    except SyntaxError as error:
        raise ConfigurationError(f"{path}:{error.lineno}: syntax error: {error.msg}") from None
    module_name = f"photonflow_context_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=path)
    if spec is None:  # only ever for a loader that refuses: none is given here
        raise ConfigurationError(f"{path}:0: cannot make a module of the context file")
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path
    try:
        exec(compiled, module.__dict__)
    # a context file's code may raise anything, sys.exit() included: named with its line
    except (Exception, SystemExit) as error:  # noqa: BLE001
        raise ConfigurationError(
            f"{path}:{_error_line(path, error)}: the context raised {type(error).__name__}: {error}") from None
    variables = {value.name: value for value in vars(module).values()
                 if isinstance(value, Variable) and value.func is not None and value.name is not None}
    return ContextFile(variables, path, code)
