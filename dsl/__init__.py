"""dsl: a declarative modeling language for deep learning.

One YAML spec says how to prepare the data, what network to build, how to train it and which
charts to draw; `python -m dsl run conf=SPEC` compiles it to a JIT-compiled JAX program.
Importing this package imports neither JAX nor flax.
"""

__version__ = "0.1.0"
