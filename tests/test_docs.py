"""The docs site builds with every page in its navigation and no broken link, and README links to pages
that exist."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(root / "mkdocs.yml"),
        "-d",
        str(site),
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=root)


def test_the_site_builds_strictly_with_every_page_in_its_navigation(tmp_path):
    result = build(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {p.name for p in (REPO / "docs").glob("*.md")}


def test_a_broken_link_fails_the_build(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    page = root / "docs" / "recipes.md"
    page.write_text(page.read_text() + "\nSee [the gone page](gone.md).\n")
    result = build(root, tmp_path / "site")
    assert result.returncode != 0 and "gone.md" in result.stderr


def test_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\((docs/[^)]+)\)", (REPO / "README.md").read_text())
    assert links and all((REPO / link).is_file() for link in links)
    assert {Path(link).name for link in links} >= {p.name for p in (REPO / "docs").glob("*.md")} - {
        "index.md"
    }


def test_readme_commands_name_real_commands_and_options(run_cli):
    """Each reparam-export line of README's examples is accepted by the command it names (--help stops
    before anything runs)."""
    import shlex

    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = [
        part.split("#")[0].strip() for b in blocks for line in b.splitlines() for part in line.split("&&")
    ]
    commands = [shlex.split(line) for line in lines if line.startswith("reparam-export ")]
    assert len(commands) >= 5
    for command in commands:
        code, out, err = run_cli(*command[1:], "--help")
        assert code == 0 and "Usage:" in out, (command, err)
