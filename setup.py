"""Build of the compiled matcher (ext/matcher.pyx -> router.engine.cmatcher) and event
encoder (ext/encoder.pyx -> router.store.cencoder).

Everything else is declared in pyproject.toml.  The extension is required:
without a C compiler the build stops with a plain message instead of a
compiler traceback.
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExtWithPlainErrors(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            raise SystemExit(
                "acd-router: could not compile the Cython matcher (ext/matcher.pyx).\n"
                "It needs a C compiler and the Python headers, e.g. on Debian:\n"
                "    apt-get install gcc python3-dev\n"
                f"Underlying error: {exc}"
            ) from exc


def extensions():
    from Cython.Build import cythonize

    return cythonize(
        [Extension("router.engine.cmatcher", ["ext/matcher.pyx"], extra_compile_args=["-O3"]),
         Extension("router.store.cencoder", ["ext/encoder.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
        include_path=["ext"],
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtWithPlainErrors})
