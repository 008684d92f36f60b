"""The compiled parts: the Claude Code parser's hot path (src/tokentop/_claude_native.c)
and the dedupe keys' table and digests (src/tokentop/_keys_native.c).

`optional=True`: where no C compiler is found the install still succeeds, and tokentop runs
the same code in Python (claude_parser.py, key_table.py), about 1.7 times as slow on a
cold scan. Everything else about the package is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tokentop._claude_native",
            ["src/tokentop/_claude_native.c"],
            optional=True,
        ),
        Extension("tokentop._keys_native", ["src/tokentop/_keys_native.c"], optional=True),
    ]
)
