"""A command's options come from its `settings` parameter's class: one flag per setting, named after the field
(or its `Var.flag`), reading the setting's variable, with its help and the struct's default. Only what was given
(flag or variable) is passed on, so a layer such as a configuration file can sit between it and the default."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import typer

from homeiq.shared.cli import EXIT_USAGE, config_error
from homeiq.shared.settings import ConfigError, Settings, Var, settings_fields

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=Settings)
_CONTEXT = "binding_context"


@dataclass(frozen=True)
class _Option:
    path: tuple[str, ...]  # field names from the command's settings down to this setting
    parameter: inspect.Parameter


def bind(*, inherit: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Turn `def cmd(..., settings: SomeSettings)` into a command whose options are SomeSettings' settings; it
    is called with the settings built and validated (a ConfigError exits 2 with the message). `inherit` names
    fields taken from the group's context object (options the group already took) instead of offered again."""

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        cls: type[Settings] = signature.parameters["settings"].annotation
        options = list(_options(cls, (), "", None, inherit))
        others = [p for p in signature.parameters.values() if p.name != "settings"]
        own_context = next((p.name for p in others if p.annotation is typer.Context), None)
        if own_context is None:
            others.insert(0, inspect.Parameter(_CONTEXT, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                               annotation=typer.Context))

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            context: typer.Context = kwargs[own_context] if own_context else kwargs.pop(_CONTEXT)
            given: dict[str, Any] = {}
            for option in options:
                value = kwargs.pop(option.parameter.name)
                source = context.get_parameter_source(option.parameter.name)
                if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
                    _put(given, option.path, value)
            given.update({name: getattr(context.obj, name) for name in inherit})
            try:
                settings = build(cls, given).validate()
            except ConfigError as exc:
                config_error(exc)
            return func(settings=settings, **kwargs)

        del command.__wrapped__  # typer reads the signature below, not the function's own
        command.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*others, *(o.parameter for o in options)])
        command.__annotations__ = {}
        return typing.cast(F, command)

    return decorate


def build(cls: type[Settings], given: dict[str, Any]) -> Settings:
    """`cls` from the values `given` (nested ones as dicts, or as built structs); not validated."""
    values: dict[str, Any] = {}
    for field in settings_fields(cls):
        if field.name not in given:
            continue
        value = given[field.name]
        if field.nested is not None and isinstance(value, dict):
            value = build(field.type, value)
        values[field.name] = value
    return cls.layered(values)


def _options(cls: type[Settings], path: tuple[str, ...], prefix: str, only: tuple[str, ...] | None,
             skip: tuple[str, ...]) -> Iterator[_Option]:
    for field in settings_fields(cls):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        if field.nested is not None:
            yield from _options(field.type, (*path, field.name), prefix + field.nested.prefix, field.nested.only, ())
        elif field.var is not None:
            yield _Option((*path, field.name), _parameter(prefix + field.name, field.type, field.default, field.var))


def _parameter(name: str, kind: Any, default: Any, var: Var) -> inspect.Parameter:
    if typing.get_origin(kind) is Literal:  # checked by the setting's check, given as text
        kind = str
    option = typer.Option(*([var.flag] if var.flag else []), envvar=var.env, help=var.help,
                          show_default=var.default_text or default != "")
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=typing.Annotated[kind, option])


def _put(tree: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def from_environment(cls: type[S]) -> S:
    """`cls` from the environment alone, read and checked exactly as a command's options are (a wrong value or a
    ConfigError prints the message naming the variable and exits 2): for a process that runs several services."""
    found: list[S] = []

    def take(settings: Any) -> None:
        found.append(settings)

    take.__annotations__ = {"settings": cls, "return": None}
    app = typer.Typer(add_completion=False)
    app.command()(bind()(take))
    try:
        code = typer.main.get_command(app).main([], prog_name=cls.__name__, standalone_mode=False)
    except typer.BadParameter as exc:  # typer's own click (the runtime has no other): a value it could not take
        typer.echo(f"configuration error: {exc.format_message()}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    if not found:
        raise typer.Exit(code if isinstance(code, int) else EXIT_USAGE)
    return found[0]
