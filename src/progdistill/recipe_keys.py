"""Every recipe key with its type, default and description, read from the config models of `config`
(`progdistill recipes --keys`), so that the documentation of the keys is the code that validates them."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import Recipe


@dataclass(frozen=True)
class Key:
    """One recipe key: dotted path, the variant it belongs to (e.g. task `parity`), type, default, description."""

    path: str
    variant: str
    type: str
    default: str
    description: str


def _variants(annotation: Any) -> list[type[BaseModel]]:
    """The config models inside an annotation (a model, a union of models, a list of a union, ...)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _variants(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if origin in (Union, types.UnionType, list, tuple):
        return [m for arg in typing.get_args(annotation) for m in _variants(arg)]
    return []


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # an item's constraints, e.g. list[Annotated[int, Field(ge=0)]]: 'int ≥ 0'
        inner, *metadata = typing.get_args(annotation)
        found = _marks([m for item in metadata for m in getattr(item, "metadata", [item])])
        return _type_name(inner) + (f" {', '.join(found)}" if found else "")
    if origin is Literal:
        return " | ".join(str(a) for a in typing.get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = ", ".join(dict.fromkeys(_type_name(a) for a in args))
        return f"list of {inner}" if origin is list or Ellipsis in typing.get_args(annotation) else f"[{inner}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _field_type(field) -> str:
    models = _variants(field.annotation)
    if len(models) > 1:
        tag = _tag(models[0]).split(":")[0]
        kinds = " | ".join(_tag(m).split(": ", 1)[1] for m in models)
        many = "list of sections" if "list" in str(field.annotation).lower() else "section"
        return f"{many}, each chosen by its `{tag}`: {kinds}"
    return _type_name(field.annotation) + _bounds(field)


def _marks(metadata: list[Any]) -> list[str]:
    """Constraints such as ['≥ 1'] or ['> 0', '≤ 1'] from pydantic metadata (annotated-types objects)."""
    marks = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "length ≥"}
    return [f"{sign} {getattr(m, name)}" for m in metadata for name, sign in marks.items()
            if getattr(m, name, None) is not None]


def _bounds(field) -> str:
    """Constraints such as ' (≥ 1)' or ' (> 0, ≤ 1)' from the field's metadata."""
    found = _marks(field.metadata)
    return f" ({', '.join(found)})" if found else ""


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if value is None:
        return "null"
    if value == "":
        return '""'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _tag(model: type[BaseModel]) -> str:
    """'name: parity' for a section chosen by a literal `name` or `type`; 'name: package.module:Class'
    for a plug-in section chosen by an import path."""
    for tag in ("name", "type"):
        field = model.model_fields.get(tag)
        if field is not None and typing.get_origin(field.annotation) is Literal:
            return f"{tag}: {typing.get_args(field.annotation)[0]}"
        if field is not None:
            return f"{tag}: package.module:Class"
    return ""


def recipe_keys(model: type[BaseModel] = Recipe, prefix: str = "", variant: str = "") -> list[Key]:
    """Every key of `model` and of its sections, depth first, in declaration order."""
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        inner = _variants(field.annotation)
        keys.append(Key(path, variant, _field_type(field), _default(field), field.description or ""))
        for sub in inner:
            many = len(inner) > 1
            child = f"{path}[]." if typing.get_origin(typing.get_args(field.annotation)[0] if typing.get_origin(
                field.annotation) is typing.Annotated else field.annotation) is list else f"{path}."
            keys += recipe_keys(sub, child, _tag(sub) if many else variant)
    return keys


def merged(keys: list[Key]) -> list[Key]:
    """Keys that are the same under several variants (task.grammar of pcfg-mlm and pcfg-ar, ...) once,
    naming every variant they belong to."""
    seen: dict[tuple[str, str, str, str], int] = {}
    out: list[Key] = []
    for k in keys:
        ident = (k.path, k.type, k.default, k.description)
        if ident in seen and k.variant:
            i = seen[ident]
            out[i] = Key(k.path, f"{out[i].variant} | {k.variant.split(': ', 1)[1]}", k.type, k.default,
                         k.description)
        else:
            seen[ident] = len(out)
            out.append(k)
    return out


def format_keys(keys: list[Key]) -> str:
    """One block per key: path (and variant), then type, default and description, indented."""
    lines = []
    for k in merged(keys):
        lines.append(k.path + (f"   (with {k.variant})" if k.variant else ""))
        lines.append(f"    {k.type}; default {k.default}" + (f"\n    {k.description}" if k.description else ""))
    return "\n".join(lines)
