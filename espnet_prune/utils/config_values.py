"""Configuration values as ESPnet's YAML delivers them, checked and typed: the one place where
every config of the plugin (``arch``, ``pruning``) turns YAML values into numbers and flags.

ESPnet reads ``config.yaml`` with PyYAML, which implements YAML 1.1: a float needs a dot in its
mantissa and a sign in its exponent, so ``1e-5``, ``5e3`` and ``1.0e5`` arrive as the *strings*
``'1e-5'``, ``'5e3'`` and ``'1.0e5'``, although YAML 1.2 and Python read them as numbers.
:func:`number` and :func:`whole_number` take exactly those strings as the numbers they spell.
Every other value of a wrong type is refused with a :class:`ValueError` that names the key, the
value and the expected type: a bool where a number belongs, NaN or infinity, any other string,
including a quoted number such as ``'0.1'`` (PyYAML reads ``0.1`` as a float, so a string
``'0.1'`` was written as one).

Example::

    number("arch.layer_norm_eps", "1e-5")       # 1e-05
    number("arch.encoder_dropout", "0.1")       # ValueError: arch.encoder_dropout must be a number,
                                                # got str '0.1' (a quoted number is a string: remove the quotes)
    typed("arch.num_heads", [4, 4], Union[int, List[int]])   # [4, 4]
"""

import math
import numbers
import re
from typing import Any, Union, get_args, get_origin

import yaml

#: A number in YAML 1.2's core schema (what Python's ``float`` reads too, less ``nan``/``inf``).
_NUMBER = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")


def is_number(value: Any) -> bool:
    """A real number that YAML can give (int or float), but not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def yaml_mangled_number(value: Any) -> Union[float, None]:
    """The number that a string spells if it is one PyYAML (YAML 1.1) left unconverted
    (``'1e-5'``, ``'5e3'``, ``'1.0e5'``), else ``None`` (also for numbers PyYAML does convert)."""
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        return None
    if not isinstance(yaml.safe_load(value), str):
        return None  # PyYAML reads it as a number: this string was quoted on purpose
    return float(value)


def _refused(name: str, value: Any, expected: str) -> ValueError:
    quoted = " (a quoted number is a string: remove the quotes)" if (
        isinstance(value, str) and _NUMBER.fullmatch(value.strip())) else ""
    return ValueError(f"{name} must be {expected}, got {type(value).__name__} {value!r}{quoted}")


def number(name: str, value: Any, expected: str = "a number") -> float:
    """``value`` as a finite float (:func:`yaml_mangled_number` strings accepted); else a
    ``ValueError`` naming ``name``, the value and ``expected``."""
    mangled = yaml_mangled_number(value)
    if mangled is not None:
        value = mangled
    if not is_number(value) or not math.isfinite(float(value)):
        raise _refused(name, value, expected)
    return float(value)


def whole_number(name: str, value: Any, expected: str = "a whole number") -> int:
    """``value`` as an int: an int, or a float / :func:`yaml_mangled_number` string without
    fraction (``10.0``, ``'5e3'``); else a ``ValueError`` naming ``name``."""
    mangled = yaml_mangled_number(value)
    if not is_number(value) and mangled is None:
        raise _refused(name, value, expected)
    as_float = float(value) if mangled is None else mangled
    if not math.isfinite(as_float) or not as_float.is_integer():
        raise _refused(name, value, expected)
    return int(value) if isinstance(value, numbers.Integral) else int(as_float)


def boolean(name: str, value: Any, expected: str = "true or false") -> bool:
    """``value`` if it is a bool (YAML's ``true``/``false``); else a ``ValueError`` naming ``name``."""
    if not isinstance(value, bool):
        raise _refused(name, value, expected)
    return value


def text(name: str, value: Any, expected: str = "a string") -> str:
    """``value`` if it is a string; else a ``ValueError`` naming ``name``."""
    if not isinstance(value, str):
        raise _refused(name, value, expected)
    return value


_SCALARS = {bool: (boolean, "true or false", "booleans"), int: (whole_number, "a whole number", "whole numbers"),
            float: (number, "a number", "numbers"), str: (text, "a string", "strings")}


def describe(hint: Any, plural: bool = False) -> str:
    """What a value of the type ``hint`` is, in words (``Union[int, List[int]]``: "a whole
    number or a list of whole numbers")."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        words = [describe(arg, plural) for arg in args if arg is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if origin is list:
        return ("lists of " if plural else "a list of ") + describe(args[0], plural=True)
    return _SCALARS[hint][2 if plural else 1]


def typed(name: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` (``bool``, ``int``, ``float``, ``str``,
    ``List[...]``, ``Optional[...]`` and unions of one scalar type with lists, as a dataclass
    declares its fields), numbers converted as :func:`number` / :func:`whole_number` do; a
    ``ValueError`` naming ``name`` (``name[i]`` for a list entry), the value and the expected type
    otherwise. Tuples are taken as lists."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        lists = [arg for arg in options if get_origin(arg) is list]
        scalars = [arg for arg in options if get_origin(arg) is not list]
        if isinstance(value, (list, tuple)) and lists:
            return typed(name, value, lists[0])
        if not scalars:
            raise _refused(name, value, describe(hint))
        check = _SCALARS[scalars[0]][0]
        return check(name, value, describe(hint))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _refused(name, value, describe(hint))
        return [typed(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
    check, expected, _ = _SCALARS[hint]
    return check(name, value, expected)
