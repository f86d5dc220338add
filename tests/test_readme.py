"""The README's Quick start is what CI runs (``.ci/run`` reads it with ``tools/readme_quickstart.py``), so its
lines must stay runnable commands: set-up plus the demo, then set-up plus the test suite."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "readme_quickstart", ROOT / "tools" / "readme_quickstart.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_runs_the_readme_quick_start_lines():
    lines = load_tool().quickstart_lines((ROOT / "README.md").read_text())
    assert lines == [
        'pip install -e ".[dev,plot]" && selfsup-demo --method moco',
        'pip install -e ".[dev,plot]" && nox',
    ]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv" in ci and "tools/readme_quickstart.py README.md" in ci and "tox -e" in ci


def test_the_readme_demo_table_has_a_row_per_registered_method():
    from selfsup.demo import DEMOS

    readme = (ROOT / "README.md").read_text()
    for method in DEMOS:
        assert f"selfsup-demo --method {method}" in readme


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# x\n", "no '## Quick start'"),
        ("## Quick start\n\nno block\n## Next\n```bash\nx\n```\n", "before the next section"),
        ("## Quick start\n```bash\nx\n", "no complete fenced code block"),
    ],
)
def test_quickstart_extraction_reports_a_broken_readme(text, message):
    with pytest.raises(ValueError, match=message):
        load_tool().quickstart_lines(text)


def test_quickstart_extraction_skips_comments_and_blank_lines():
    text = "intro\n## Quick start\n\n```bash\n# set up\n\npip install x\n  nox  \n```\n"
    assert load_tool().quickstart_lines(text) == ["pip install x", "nox"]


def _help(entry) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        entry.parse_args(["--help"])
    return out.getvalue()


def test_the_common_flags_the_readme_lists_are_flags_of_every_trainer():
    import re

    from selfsup.shared.runtime.registry import registered_trainers

    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("Common flags of every trainer:") :].split("(a test checks")[0]
    flags = set(re.findall(r"`(--[a-z_]+)", paragraph))
    assert len(flags) >= 10, paragraph
    for name, entry in registered_trainers().items():
        text = _help(entry)
        missing = sorted(flag for flag in flags if not re.search(rf"{flag}\b", text))
        assert not missing, f"{entry.prog} ({name}) lacks the README's common flags {missing}"
