"""Build of the compiled parts: the matcher (ext/matcher.pyx -> router.engine.cmatcher), the event
encoder (ext/encoder.pyx -> router.store.cencoder), and the compiled twins of the engine's hot
path (router/_twins.py): router/events.py, router/engine/{messages,agents,engine}.py and
router/sim/{traffic,simulator}.py compiled in place from their own source, typed by the declarations in
ext/router/ (Cython's pure-Python mode), each .py staying the pure-Python twin of its build.

Everything else is declared in pyproject.toml.  The extensions are required:
without a C compiler the build stops with a plain message instead of a
compiler traceback.
"""
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# the modules compiled from their own source (router/_twins.py's TWINS, as paths)
TWIN_SOURCES = ["router/events.py", "router/engine/messages.py", "router/engine/agents.py",
                "router/engine/engine.py", "router/sim/traffic.py", "router/sim/simulator.py"]
DIRECTIVES = {"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True,
              "initializedcheck": False}


class BuildExtWithPlainErrors(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # distutils raises several unrelated types here
            raise SystemExit(
                "acd-router: could not compile its Cython extensions (ext/, router/_twins.py).\n"
                "It needs a C compiler and the Python headers, e.g. on Debian:\n"
                "    apt-get install gcc python3-dev\n"
                f"Underlying error: {exc}"
            ) from exc


def declarations_changed() -> bool:
    """Whether a declaration of ext/router/ is newer than a twin's generated C: cythonize does not
    see an augmenting .pxd found on the include path (nor one a twin cimports), so then every twin
    is generated again."""
    generated = [Path("build/cython") / Path(source).with_suffix(".c") for source in TWIN_SOURCES]
    if not all(c.exists() for c in generated):
        return True
    newest = max(p.stat().st_mtime for p in Path("ext/router").rglob("*.pxd"))
    return newest > min(c.stat().st_mtime for c in generated)


def extensions():
    from Cython.Build import cythonize

    compiled = cythonize(
        [Extension("router.engine.cmatcher", ["ext/matcher.pyx"], extra_compile_args=["-O3"]),
         Extension("router.store.cencoder", ["ext/encoder.pyx"], extra_compile_args=["-O3"])],
        compiler_directives=DIRECTIVES, include_path=["ext"], build_dir="build/cython",
    )
    # The twins keep Python's semantics: no annotation typing (an `x: dict` argument would refuse a
    # dict subclass, an `x: float` one a None) and Python's division and indexing; only the
    # declarations in ext/router/**/*.pxd type them.
    return compiled + cythonize(
        [Extension(path[:-3].replace("/", "."), [path], extra_compile_args=["-O3"]) for path in TWIN_SOURCES],
        compiler_directives={"language_level": "3", "annotation_typing": False},
        include_path=["ext"], build_dir="build/cython", force=declarations_changed(),
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtWithPlainErrors})
