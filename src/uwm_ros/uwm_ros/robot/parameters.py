"""Node parameters whose whole numbers are valid floats.

rclpy types a parameter by its default, so ``control_rate_hz: 20`` in a params file or
``-p control_rate_hz:=10`` would be an integer where a float is declared, and the node would die
with InvalidParameterTypeException. Float parameters (and lists of floats) are declared with
dynamic typing and read back as floats; a value that is not a number is a ValueError naming it.
"""
from __future__ import annotations

import array

from rcl_interfaces.msg import ParameterDescriptor


def _is_float_kind(default) -> bool:
    if isinstance(default, (list, tuple)):
        return len(default) > 0 and all(isinstance(v, float) for v in default)
    return isinstance(default, float)


def declare_parameters(node, spec: dict) -> None:
    """``spec``: name -> (default, description)."""
    for name, (default, description) in spec.items():
        node.declare_parameter(name, list(default) if isinstance(default, tuple) else default,
                               ParameterDescriptor(description=description, dynamic_typing=_is_float_kind(default)))


def parameter_value(node, name: str, default):
    """The parameter's value, as floats where ``default`` is a float or a list of floats."""
    value = node.get_parameter(name).value
    if not _is_float_kind(default):
        return value
    is_list = isinstance(default, (list, tuple))
    numbers = list(value) if isinstance(value, (list, tuple, array.array)) and is_list else [value]
    if not (is_list or isinstance(value, (int, float))) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        raise ValueError(f"parameter {name}={value!r} must be {'a list of numbers' if is_list else 'a number'}")
    floats = [float(v) for v in numbers]
    return floats if is_list else floats[0]
