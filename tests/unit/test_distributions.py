"""The committed distribution configs match their templates and name only installable dependencies."""

import shlex
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
RUN_YAML = ROOT / "distributions" / "milvus-embedded" / "run.yaml"
# pip options that `llama stack list-deps` emits and that take a value.
OPTIONS_WITH_VALUE = {"--extra-index-url", "--index-url", "-i"}


def test_generated_distributions_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_distributions.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, (
        "distributions/ differ from templates/; run scripts/gen_distributions.py\n" + result.stdout + result.stderr
    )


def parse_list_deps(output: str) -> list[Requirement]:
    """Parses `llama stack list-deps --format deps-only` output.

    Llama Stack 0.7.3 prints pip argument lines, not one requirement per line: first all plain requirements
    separated by spaces, then one line per provider needing special pip flags (e.g.
    `sentence-transformers --no-deps`, `torch ... --extra-index-url URL`), then one line per `module:`
    of an external provider (printed as given, as a pip requirement).
    """
    requirements = []
    for line in output.splitlines():
        tokens = shlex.split(line)
        skip_next = False
        for token in tokens:
            if skip_next:
                skip_next = False
                continue
            if token.startswith("-"):
                skip_next = token in OPTIONS_WITH_VALUE
                continue
            requirements.append(Requirement(token))
    return requirements


def test_list_deps_prints_installable_requirements():
    llama = Path(sys.executable).parent / "llama"
    assert llama.exists(), f"llama CLI not found next to {sys.executable}"
    result = subprocess.run(
        [str(llama), "stack", "list-deps", str(RUN_YAML)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip(), "list-deps printed nothing"
    requirements = parse_list_deps(result.stdout)
    for requirement in requirements:
        # A module path (e.g. `llama_stack_milvus.provider`) or a file path would parse as a name but is not a
        # package pip can install.
        assert "." not in requirement.name and "/" not in requirement.name, f"not a package name: {requirement}"
    names = {canonicalize_name(r.name) for r in requirements}
    # The external provider's `module:` must name this project, so that `pip install` of the output installs it.
    assert "llama-stack-milvus" in names, sorted(names)
    assert "sentence-transformers" in names, sorted(names)
