"""``brainalign demo``, ``brainalign run`` and ``brainalign config example``: whole studies.

A thin layer over :func:`brainalign.pipeline.study.run_study`: the demo runs the study
configuration shipped in the package (``brainalign/pipeline/demo.toml``), ``run`` a user's
TOML file; both end with a summary table.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import click

from brainalign.cli import main
from brainalign.cli.cache import disk_size, human
from brainalign.pipeline.config import ConfigError, example_toml, load_config, validate

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def demo_config(out: str | Path) -> dict:
    """The demo study (``brainalign/pipeline/demo.toml``) writing into ``out``."""
    raw = tomllib.loads(files("brainalign.pipeline").joinpath("demo.toml").read_text())
    config = validate(raw)
    config["study"]["out"] = str(Path(out).resolve())
    return config


def _run_and_print(config: dict, progress: bool) -> None:
    from brainalign.models.registry import ModelNotInstalledError, UnknownModelError
    from brainalign.pipeline.study import run_study

    try:
        summary = run_study(config, progress=progress)
    except (ConfigError, UnknownModelError, ModelNotInstalledError) as err:
        # e.g. the stories' scans against the brain data, or a model name that names nothing
        raise click.ClickException(str(err)) from None
    rows = summary.rows()
    width = max(len(item) for item, _ in rows)
    click.echo("")
    click.echo(f"{'item'.ljust(width)}  value")
    click.echo(f"{'-' * width}  {'-' * 40}")
    for item, value in rows:
        click.echo(f"{item.ljust(width)}  {value}")
    for note in summary.notes:
        click.echo(f"note: {note}")
    click.echo(f"summary: {Path(summary.out) / 'summary.json'}")
    cache = Path(summary.out) / "cache"
    if cache.is_dir():
        click.echo(f"cache: {cache} ({human(disk_size(cache))}: the stages, kept so that a rerun "
                   f"resumes; `brainalign cache clear {summary.out}` deletes them)")


@main.command("demo")
@click.option("--out", default="brainalign-demo", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")
@click.option("--scheduler", default=None,
              help='Override compute.scheduler ("serial", "local" or a Dask address).')
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bars.")
def demo(out: str, scheduler: str | None, progress: bool) -> None:
    """The embedded default study: SmolLM2-135M-Instruct (smollm2-135m-instruct-q4, GGUF
    Q4_1 dequantised to float32) reads the bundled story, simulated fMRI
    with planted Yeo networks on fsaverage5 and in MNI space, study A and a study-B
    lesion check; maps, tables, report.html and summary.json in OUT."""
    config = demo_config(out)
    if scheduler is not None:
        config["compute"]["scheduler"] = scheduler
    _run_and_print(config, progress)


@main.command("run")
@click.argument("config_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bars.")
def run(config_path: str, progress: bool) -> None:
    """Run (or resume) the study described by CONFIG_PATH (a TOML file; see
    ``brainalign config example``)."""
    try:
        config = load_config(config_path, check_files=True)
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    _run_and_print(config, progress)


@main.group("config")
def config_group() -> None:
    """Study configuration files."""


@config_group.command("example")
@click.option("--demo", "as_demo", is_flag=True, help="Print the demo's configuration instead.")
def config_example(as_demo: bool) -> None:
    """Print a study TOML with every key at its default (or the demo's file).

    Paths may use ${NAME} or ${NAME:-fallback} environment variables and are resolved
    against the file's folder. Real fMRI needs fmri.first_volume_s or
    fmri.discarded_volumes (when each run's first kept volume was acquired on the words'
    clock); networks.atlas = "none" skips the network mapping."""
    if as_demo:
        click.echo(files("brainalign.pipeline").joinpath("demo.toml").read_text(), nl=False)
    else:
        click.echo(example_toml(), nl=False)
