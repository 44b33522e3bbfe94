"""deploy/Dockerfile: multi-stage, slim, non-root as the manifests expect (no docker needed)."""

from __future__ import annotations

import re

from organelle.deploy import plan_app, render_k8s
from tests.deploy.test_k8s import ROOT

DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def test_the_image_is_multi_stage_slim_and_runs_as_the_manifests_user() -> None:
    steps = instructions()
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) >= 2
    assert all(re.match(r"python:\$\{PYTHON\}-slim AS \w+", s) for s in stages)
    final = steps[len(steps) - steps[::-1].index(("FROM", stages[-1])) :]  # the runtime stage
    users = [rest for word, rest in final if word == "USER"]
    assert users == ["10001:10001"]
    assert ("COPY", "--from=build /opt/organelle /opt/organelle") in final
    assert not any(word == "RUN" and "apt-get install" in rest for word, rest in final)
    assert ("ENTRYPOINT", '["organelle"]') in final
    pod = next(
        o
        for o in render_k8s(plan_app(ROOT / "examples/shop/app.toml"))
        if o["kind"] == "Deployment"
    )
    security = pod["spec"]["template"]["spec"]["securityContext"]
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == users[0]
    assert pod["spec"]["template"]["spec"]["containers"][0]["workingDir"] == "/data"
    assert ("WORKDIR", "/data") in final
