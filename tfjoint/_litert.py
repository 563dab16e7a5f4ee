"""The one place that reads LiteRT internals (`ai_edge_litert`), and opens its interpreters.

`PRIVATE_ATTRIBUTES` lists every private attribute read here; a test checks
each still exists, so a LiteRT upgrade that removes one breaks this file's
test and nothing else.
"""

from ai_edge_litert.interpreter import Interpreter, OpResolverType

__all__ = ["Interpreter", "OpResolverType", "ops_details", "PRIVATE_ATTRIBUTES"]

PRIVATE_ATTRIBUTES = (("Interpreter", "_get_ops_details"),)


def ops_details(interpreter) -> list[dict]:
    """Every operator of the interpreter's primary subgraph: index, op_name, inputs, outputs.

    LiteRT has no public API that lists operators.
    """
    return interpreter._get_ops_details()
