# Build of the compiled twin kdp._fastpath (everything else is in pyproject.toml).
# `pip install .` and `pip install -e .` both cythonize and compile it.
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "kdp._fastpath",
        ["src/kdp/_fastpath.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "initializedcheck": False,
            "cdivision": True,
        },
    ),
)
