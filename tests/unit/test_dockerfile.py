"""The Dockerfile, parsed as text: python slim base, non-root user, the ``twinstream``
entry point, every package folder copied, a writable data directory.
"""

from __future__ import annotations

import json
import re
import tomllib

from deploy_render_support import DOCKERFILE, REPO


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_python_slim_non_root_and_entrypoint() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0]) for w, rest in instructions if w == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    entrypoint = json.loads(next(rest for word, rest in instructions if word == "ENTRYPOINT"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["twinstream"] and "twinstream" in scripts


def test_dockerfile_copies_every_package_folder() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for source in sources:
                if "[" in source:  # optional file (glob that may match nothing)
                    continue
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                copied.add(source.rstrip("/"))
    assert "pyproject.toml" in copied
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs <= copied, f"package folders not copied into the image: {package_dirs - copied}"


def test_dockerfile_data_dir_is_writable_by_the_user() -> None:
    text = DOCKERFILE.read_text()
    env = dict(re.findall(r"(TWINSTREAM_[A-Z_]+)=(\S+)", text))
    data_dir = env["TWINSTREAM_DATA_DIR"]
    assert f"mkdir -p {data_dir}" in text and re.search(rf"chown \S+ {re.escape(data_dir)}\b", text)
