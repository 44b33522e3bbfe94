"""``organelle deploy k8s APP.toml --out DIR``: Kubernetes manifests of an app.

The config file is read as written (``secret://`` references stay
references), the module classes are imported to learn their names, jobs,
stream consumers and ports, and one YAML file per object is written. Nothing
starts and no cluster is contacted. See docs/deploy.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.text import Text

from organelle.cli._output import EXIT_INVALID, out, plural, report, status

__all__ = ["deploy"]

deploy = typer.Typer(
    name="deploy", help="Render deployment manifests of an app.", no_args_is_help=True
)

ConfigFile = Annotated[
    Path, typer.Argument(metavar="APP.toml", help="The app's config file.", show_default=False)
]
OutDir = Annotated[
    Path,
    typer.Option("--out", "-o", help="Folder the manifests are written to.", show_default=False),
]
Groups = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        "--group",
        metavar="[NAME=]MODULE,MODULE",
        help="One node group, a Deployment whose pods run only these modules (repeatable, "
        "one Deployment each); none: one Deployment running every module.",
        show_default=False,
    ),
]


def _fail(ctx: typer.Context, exc: BaseException) -> NoReturn:
    report(exc, building=True, show_traceback=bool(getattr(ctx.obj, "traceback", False)))
    raise typer.Exit(EXIT_INVALID) from None


@deploy.command("k8s")
def k8s(  # noqa: PLR0917 - one parameter per option of the command
    ctx: typer.Context,
    config_file: ConfigFile,
    out_dir: OutDir,
    groups: Groups = None,
    image: Annotated[str | None, typer.Option(help="Container image.")] = None,
    name: Annotated[str | None, typer.Option(help="App name, prefix of every object.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Namespace of every object.")] = None,
    autoscaler: Annotated[
        str | None,
        typer.Option(help="auto (KEDA where jobs or streams, else HPA), hpa, keda, none."),
    ] = None,
    min_replicas: Annotated[int | None, typer.Option(help="Autoscaler floor.")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Autoscaler ceiling.")] = None,
    replicas: Annotated[int | None, typer.Option(help="Replicas without an autoscaler.")] = None,
    prometheus: Annotated[
        str | None, typer.Option(help="Prometheus URL KEDA reads queue depth and lag from.")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Secret that secret://env/NAME reads (key NAME).")
    ] = None,
    helm_values: Annotated[
        bool,
        typer.Option("--helm-values", help="Also write values.yaml for deploy/helm/organelle."),
    ] = False,
) -> None:
    """Write Kubernetes manifests for an app: one YAML file per object.

    Per group: Deployment (probes on the ops port, preStop and grace period
    matching the drain), Service, PodDisruptionBudget, and an HPA or a KEDA
    ScaledObject; for the app: a ConfigMap with the config file. Exit codes:
    0 written, 2 the config or an option is invalid.
    """
    from organelle.deploy import (
        NodeGroup,
        dump_yaml,
        plan_app,
        render_k8s,
        write_manifests,
    )
    from organelle.deploy import helm_values as values_of

    try:
        parsed = tuple(NodeGroup.parse(g) for g in groups) if groups else None
        plan = plan_app(
            config_file,
            groups=parsed,
            image=image,
            name=name,
            namespace=namespace,
            autoscaler=_autoscaler(autoscaler),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            replicas=replicas,
            prometheus=prometheus,
            secret=secret,
        )
        written = write_manifests(render_k8s(plan), out_dir)
        if helm_values:
            path = out_dir / "values.yaml"
            path.write_text(dump_yaml(values_of(plan)), encoding="utf-8")
            written.append(path)
    except Exception as exc:
        _fail(ctx, exc)
    for note in plan.notes:
        status(f"note: {note}")
    for path in written:
        out.print(Text(str(path)))
    status(f"wrote {plural(len(written), 'file')} for {plural(len(plan.groups), 'group')}")


def _autoscaler(value: str | None) -> str | None:
    from organelle.errors import ConfigError

    if value is not None and value not in ("auto", "hpa", "keda", "none"):
        raise ConfigError(f"--autoscaler {value!r}: use auto, hpa, keda or none")
    return value
