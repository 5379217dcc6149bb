"""mlib: a declarative reconciler for local AI-model libraries.

The public entry point is :mod:`reconciler.api`; everything else is internal and arranged in layers
(see DESIGN.md section 7): values (L0), pure logic (L1), reads (L2), effects (L3), api/cli (L4).
"""

__version__ = "0.1.0"
