"""Flag groups shared by several subcommands, and the settings object built from them.

The flags are made from the models of :mod:`streamer.settings`, where each setting is written
once: a table names the field behind each flag (:data:`KAFKA_FLAGS`,
:data:`RESTORATION_FLAGS`, :data:`WORKER_FLAGS`; the flag is ``--<field-name>`` into
``args.<field_name>``), and the flag takes its help (the field's description, its default and
its ``STREAMER_*`` variable), its type and its choices (a ``Literal``) from the field.

Flags carry no defaults of their own: an absent flag leaves the environment's value
(``STREAMER_*``) or the model's default in place, so the defaults live in one place.
"""

from __future__ import annotations

import argparse
import glob
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Callable, Iterable, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from streamer.imaging.psf import PSFSpec, parse_psf_spec
from streamer.settings import (ENV_NESTED, ENV_PREFIX, MIB, RestorationSettings,
                               StreamerSettings)


@dataclass(frozen=True)
class Flag:
    """The command-line flag of one settings field."""

    path: str  # the field in StreamerSettings, dotted: "kafka.bootstrap_servers"
    metavar: str | None = None
    parse: Callable[[str], object] | None = None  # the flag's text to the field's value

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments: the field's name."""
        return self.path.rpartition(".")[2]

    @property
    def option(self) -> str:
        """``--field-name``."""
        return "--" + self.dest.replace("_", "-")

    @property
    def variable(self) -> str:
        """The environment variable of the same field."""
        return ENV_PREFIX + self.path.upper().replace(".", ENV_NESTED)


KAFKA_FLAGS = (
    Flag("kafka.bootstrap_servers", "HOST:PORT,..."),
    Flag("kafka.security_protocol"),
    Flag("kafka.sasl_mechanism"),
    Flag("kafka.sasl_username"),
    Flag("kafka.sasl_password"),
    Flag("kafka.ssl_cafile", "PEM"),
    Flag("kafka.ssl_certfile", "PEM"),
    Flag("kafka.ssl_keyfile", "PEM"),
    Flag("chunk_bytes", "N"),
    Flag("max_frame_bytes", "N"),
    Flag("compression"),
    Flag("topics.partitions", "N"),
    Flag("metrics_address", "HOST:PORT"),
)
RESTORATION_FLAGS = (
    Flag("restoration.window", "N"),
    Flag("restoration.median_method"),
    Flag("restoration.psf", "SPEC", parse_psf_spec),
    Flag("restoration.psf_fallback", "SPEC", parse_psf_spec),
    Flag("restoration.target_fwhm", "PIXELS"),
    Flag("restoration.restored_as"),
    Flag("restoration.iterations", "N"),
    Flag("restoration.damping", "SIGMA"),
    Flag("restoration.pedestal", "SIGMA"),
    Flag("restoration.tolerance", "X"),
    Flag("restoration.plateau", "SHARE"),
    Flag("restoration.accelerate"),
    Flag("restoration.noise_map"),
    Flag("restoration.method"),
    Flag("device", "SPEC"),
)
WORKER_FLAGS = (Flag("group_id"), Flag("worker_id"), Flag("host_threads", "N"),
                Flag("catalogue_processes", "N"))


def field_of(path: str) -> FieldInfo:
    """The field of :class:`StreamerSettings` at a dotted path."""
    model: type[BaseModel] = StreamerSettings
    *parents, name = path.split(".")
    for parent in parents:
        model = model.model_fields[parent].annotation
    return model.model_fields[name]


def plain_type(annotation: object) -> object:
    """``X`` of an optional field's ``X | None``; any other type as it is."""
    if get_origin(annotation) in (Union, UnionType):
        return next(arg for arg in get_args(annotation) if arg is not type(None))
    return annotation


def _shown(name: str, default: object) -> str | None:
    """A default as ``--help`` prints it, or None where the description says it."""
    if default is None or default == "" or isinstance(default, bool):
        return None
    if isinstance(default, PSFSpec):
        return str(default)
    if isinstance(default, float):
        return f"{default:g}"
    if name.endswith("_bytes") and isinstance(default, int) and default % MIB == 0:
        return f"{default // MIB} MiB"
    return str(default)


def flag_help(flag: Flag) -> str:
    """The field's description, its default and its environment variable."""
    field = field_of(flag.path)
    shown = _shown(flag.dest, field.get_default(call_default_factory=True))
    variable = f"${flag.variable}"
    if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
        variable += " as JSON"  # the variable holds the model, not the flag's text
    notes = f"default {shown}; {variable}" if shown else variable
    return f"{field.description} ({notes})".replace("%", "%%")


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
              flags: Iterable[Flag]) -> None:
    """One argument per flag: type and choices from the field's type, no default."""
    for flag in flags:
        kind = plain_type(field_of(flag.path).annotation)
        options: dict[str, object] = {"dest": flag.dest, "metavar": flag.metavar,
                                      "help": flag_help(flag)}
        if kind is bool:  # --name / --no-name
            options["action"] = argparse.BooleanOptionalAction
            del options["metavar"]
        elif get_origin(kind) is Literal:
            options["choices"] = list(get_args(kind))
        elif kind in (int, float):
            options["type"] = kind
        parser.add_argument(flag.option, **options)


def kafka_flags(parser: argparse.ArgumentParser) -> None:
    """Connection, security, sizes and metrics flags of the streaming processes."""
    add_flags(parser.add_argument_group("kafka (flags win over STREAMER_* variables)"),
              KAFKA_FLAGS)


def restoration_flags(parser: argparse.ArgumentParser) -> None:
    """Window, PSF, iterations, tolerance, convolution method and device."""
    add_flags(parser.add_argument_group("restoration (flags win over STREAMER_* variables)"),
              RESTORATION_FLAGS)


DEVICE_HELP = flag_help(Flag("device"))


def _apply(data: dict, args: argparse.Namespace, flags: Iterable[Flag]) -> None:
    """Write the flags that were given into ``data`` (a settings model's dump)."""
    for flag in flags:
        value = getattr(args, flag.dest, None)
        if value is None:
            continue
        *parents, name = flag.path.split(".")
        target = data
        for parent in parents:
            target = target[parent]
        target[name] = flag.parse(value) if flag.parse else value


def restoration_from(args: argparse.Namespace, base: RestorationSettings | None = None
                     ) -> RestorationSettings:
    """``base`` (default: the model's defaults) with the restoration flags that were given."""
    values = (base or RestorationSettings()).model_dump()
    _apply({"restoration": values}, args,
           [flag for flag in RESTORATION_FLAGS if flag.path.startswith("restoration.")])
    return RestorationSettings.model_validate(values)


def settings_from(args: argparse.Namespace) -> StreamerSettings:
    """Environment first, then the flags that were given."""
    data = StreamerSettings().model_dump()
    _apply(data, args, (*KAFKA_FLAGS, *RESTORATION_FLAGS, *WORKER_FLAGS))
    return StreamerSettings.model_validate(data)


def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Files named or matched by ``patterns``, and the patterns that matched nothing."""
    files: list[Path] = []
    missing: list[str] = []
    for pattern in patterns:
        if Path(pattern).exists():
            files.append(Path(pattern))
            continue
        matches = sorted(glob.glob(pattern))
        if matches:
            files.extend(Path(m) for m in matches)
        else:
            missing.append(pattern)
    return files, missing
