"""Command-line options made from settings fields, so that nothing is declared twice.

    @with_settings(setting("server.port"), setting("broker.url", "--broker"))
    def serve(settings: Settings) -> None: ...

gives ``serve`` the options ``--port`` and ``--broker``, whose type, bounds, help (the
field's ``description``) and shown default are the field's own, and calls it with
``settings`` read from ``EMOSTREAM_*`` with the flags given on top: a flag given wins over
the environment; one not given (its parameter source is the default) leaves the
environment, or the default, alone.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import annotated_types
import typer

from emostream.cli.common import load_settings
from emostream.settings import Leaf
from emostream.settings import leaf as find_setting

Command = Callable[..., None]
_CONTEXT = "_typer_context"  # where typer passes the context: which flags were given
_PLAIN: tuple[type, ...] = (bool, int, float, str, Path)


@dataclass(frozen=True)
class SettingOption:
    leaf: Leaf
    flags: tuple[str, ...]

    @property
    def name(self) -> str:
        """The parameter the value comes in as: ``worker__max_batch``."""
        return "__".join(self.leaf.path)

    @property
    def kind(self) -> type:
        """What click parses: the field's type when plain (``int | None`` -> int), else text
        that pydantic reads as it reads the environment (lists: ``a,b``)."""
        annotation = self.leaf.field.annotation
        if get_origin(annotation) in (Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            annotation = args[0] if len(args) == 1 else str
        return annotation if annotation in _PLAIN else str

    def bounds(self) -> dict[str, Any]:
        """The field's ``ge``/``gt``/``le``/``lt`` as click's range (shown in the help)."""
        if self.kind not in (int, float):
            return {}
        out: dict[str, Any] = {}
        for m in self.leaf.field.metadata:
            if isinstance(m, annotated_types.Ge):
                out["min"] = m.ge
            elif isinstance(m, annotated_types.Gt):
                out.update(min=m.gt, min_open=True)
            elif isinstance(m, annotated_types.Le):
                out["max"] = m.le
            elif isinstance(m, annotated_types.Lt):
                out.update(max=m.lt, max_open=True)
        return out

    def help(self) -> str:
        names = " or ".join(n for n in (self.leaf.env, self.leaf.flat) if n)
        return f"{self.leaf.description} (env {names})".lstrip()

    def parameter(self) -> inspect.Parameter:
        default = self.leaf.field.get_default(call_default_factory=True)
        info = typer.Option(
            default if isinstance(default, self.kind) else None,
            *self.flags,
            help=self.help(),
            **self.bounds(),
        )
        return inspect.Parameter(
            self.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=self.kind | None
        )


def setting(path: str, *flags: str) -> SettingOption:
    """The setting at ``path`` (``"worker.max_batch"``) as an option; the flag is the field's
    name (``--max-batch``) unless given."""
    found = find_setting(path)
    return SettingOption(found, flags or (f"--{found.path[-1].replace('_', '-')}",))


def with_settings(*options: SettingOption) -> Callable[[Command], Command]:
    """Add ``options`` to a command that takes ``settings: Settings`` (and any other
    parameters, left as they are), and call it with the settings built."""

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command)
        kept = [p for p in signature.parameters.values() if p.name != "settings"]
        context = inspect.Parameter(
            _CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context
        )
        added = [o.parameter() for o in options]

        @functools.wraps(command)
        def run(**values: Any) -> None:
            ctx: typer.Context = values.pop(_CONTEXT)
            given: dict[str, Any] = {}
            for option in options:
                value = values.pop(option.name)
                source = ctx.get_parameter_source(option.name)
                if source is not None and source.name != "DEFAULT":
                    *branches, field = option.leaf.path
                    node = given
                    for branch in branches:
                        node = node.setdefault(branch, {})
                    node[field] = value
            command(settings=load_settings(**given), **values)

        # typer reads the signature and the annotations: ours, without ``settings``
        params = [*kept, context, *added]
        run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        run.__annotations__ = {
            **{k: v for k, v in command.__annotations__.items() if k != "settings"},
            **{p.name: p.annotation for p in (context, *added)},
        }
        return run

    return decorate
