"""The one thing pyproject.toml cannot say: the optional compiled lookups.

`optional=True`: where no C compiler is found the install goes on without them and the client
uses its pure-Python lookups (see resolverd/_speedups.c and the README).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "resolverd._speedups",
            sources=["resolverd/_speedups.c"],
            include_dirs=["include"],
            depends=["include/resolverd.h", "include/third_party/xxhash.h"],
            extra_compile_args=["-O2", "-std=c11", "-fno-strict-aliasing"],
            optional=True,
        )
    ]
)
