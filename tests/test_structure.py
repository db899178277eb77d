"""The shape of the package, as the jobs redesign (issue 12) set it, checked on the code:
no job imports another job, job files and functions stay short, no file grows past 600
lines, and no function below the jobs takes a job's config; and of the tests: no module
imports a conftest or a test module (helpers live in tests/helpers/). Each rule has a
negative control on a made-up source, so the checks can fail."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "contrastive"
TESTS = Path(__file__).resolve().parent
JOBS = ("pretrain", "linear_probe", "knn", "distill", "demo")
# Where a job's composed config may be taken: the jobs and the CLI.
CONFIG_TAKERS = ("jobs/", "cli.py")


def sources() -> dict[str, str]:
    return {str(p.relative_to(PACKAGE)): p.read_text() for p in sorted(PACKAGE.rglob("*.py"))}


def job_imports(source: str) -> list[str]:
    """The job modules ``source`` imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [n for n in names if n in {f"contrastive.jobs.{job}" for job in JOBS}]
    return sorted(set(found))


def long_functions(source: str, limit: int) -> list[str]:
    tree = ast.parse(source)
    return [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"  # type: ignore[operator]
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > limit  # type: ignore[operator]
    ]


def config_takers(source: str) -> list[str]:
    """Functions with a parameter named ``cfg`` or annotated ``DictConfig``."""
    takers = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
            if arg.arg == "cfg" or "DictConfig" in annotation:
                takers.append(f"{node.name}({arg.arg})")
    return takers


def imported_test_modules(source: str) -> list[str]:
    """The conftest and ``test_*`` modules ``source`` imports (relative imports too)."""

    def is_test_module(name: str) -> bool:
        return any(part == "conftest" or part.startswith("test_") for part in name.split("."))

    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            joint = "." if node.module else ""
            names = [base, *(f"{base}{joint}{a.name}" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [n for n in names if is_test_module(n)][:1]  # one name per import
    return sorted(set(found))


def test_no_job_imports_another_job() -> None:
    for name, source in sources().items():
        if name.startswith("jobs/") and Path(name).stem in JOBS:
            own = f"contrastive.jobs.{Path(name).stem}"
            assert [m for m in job_imports(source) if m != own] == [], name


def test_job_files_and_functions_are_short() -> None:
    for job in JOBS:
        source = (PACKAGE / "jobs" / f"{job}.py").read_text()
        assert len(source.splitlines()) < 200, job
        assert long_functions(source, 150) == [], job


def test_the_methods_base_class_is_at_most_200_lines_and_each_method_one_file() -> None:
    """The methods issue's rule: no base class over 200 lines; a method is one file."""
    from contrastive.methods import METHODS

    assert len(sources()["methods/base.py"].splitlines()) <= 200
    for name, cls in METHODS.items():
        assert cls.__module__ == f"contrastive.methods.{name}", name
        assert (PACKAGE.parent / "conf" / "method" / f"{name}.yaml").is_file(), name


def test_no_file_in_the_package_is_over_600_lines() -> None:
    lengths = {name: len(source.splitlines()) for name, source in sources().items()}
    assert {name: n for name, n in lengths.items() if n > 600} == {}


def test_only_the_jobs_and_the_cli_take_a_job_config() -> None:
    for name, source in sources().items():
        if name.startswith(CONFIG_TAKERS):
            continue
        assert config_takers(source) == [], name


@pytest.mark.parametrize(
    ("check", "source", "found"),
    [
        (
            job_imports,
            "from contrastive.jobs.pretrain import build\n",
            ["contrastive.jobs.pretrain"],
        ),
        (job_imports, "from contrastive.jobs import knn\n", ["contrastive.jobs.knn"]),
        (job_imports, "from contrastive.jobs.run import Run\n", []),
        (config_takers, "def f(node: DictConfig) -> None: ...\n", ["f(node)"]),
        (config_takers, "def g(cfg) -> None: ...\n", ["g(cfg)"]),
        (config_takers, "def h(x: int) -> None: ...\n", []),
    ],
)
def test_the_checks_can_fail(check: object, source: str, found: list[str]) -> None:
    assert check(source) == found  # type: ignore[operator]


def test_the_length_check_can_fail() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(151))
    assert long_functions(f"def job():\n{body}", 150) == ["job (152 lines)"]


def test_no_test_module_imports_a_conftest_or_a_test_module() -> None:
    """Fixtures reach the tests through pytest and helpers through tests.helpers; importing
    a conftest or a test module runs it twice under two names and hides where things live."""
    for path in sorted(TESTS.rglob("*.py")):
        assert imported_test_modules(path.read_text()) == [], path.relative_to(TESTS)
    # The negative control: each way of importing one is found, and helpers are not.
    made_up = {
        "from tests.conftest import QUIET\n": ["tests.conftest"],
        "from tests.test_fault_tolerance import signal_at\n": ["tests.test_fault_tolerance"],
        "from tests.data import test_cifar\n": ["tests.data.test_cifar"],
        "import tests.jobs.test_resume as resume\n": ["tests.jobs.test_resume"],
        "from .conftest import stl10_root\n": [".conftest"],
        "from . import test_sampler\n": [".test_sampler"],
        "from tests.helpers.jobs import QUIET\nimport tests.helpers.resume\n": [],
    }
    for source, found in made_up.items():
        assert imported_test_modules(source) == found, source
