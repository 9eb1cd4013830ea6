"""`distill` for CI: files, jobs and artifacts from the command line, and `distill run job.yaml`, which
uploads the job's local files, submits it, waits with its progress, checks its gates and downloads its
artifacts. Configured by $DISTILL_URL and $DISTILL_API_KEY (or --url, --api-key).

Exit codes: 0 succeeded (and its gates passed), 1 the job failed, 2 bad usage, a refused request or no
service at the URL, 3 cancelled, 4 a gate failed, 5 timed out waiting."""

import json
import sys
from collections.abc import Callable
from enum import IntEnum
from pathlib import Path

import click

from distill_client.client import Client
from distill_client.convert import PICKLED, as_safetensors
from distill_client.errors import APIError, DistillError, WaitTimeout
from distill_client.job_files import local_files, read_job_file, with_file_ids
from distill_client.model_folder import FOLDER_ARTIFACTS, unpack_model_folder
from distill_client.objects import File, Job
from distill_client.progress import Progress, UploadProgress


class Exit(IntEnum):
    SUCCEEDED = 0
    FAILED = 1
    REFUSED = 2
    CANCELLED = 3
    GATE_FAILED = 4
    TIMED_OUT = 5


class Context:
    def __init__(self, url: str | None, api_key: str | None, as_json: bool):
        self.url, self.api_key, self.as_json = url, api_key, as_json
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url, self.api_key)
        return self._client

    def show(self, value, line: str) -> None:
        """`value` (an object or a list of them) as JSON with --json, else `line`."""
        if self.as_json:
            body = [v.raw for v in value] if isinstance(value, list) else getattr(value, "raw", value)
            click.echo(json.dumps(body, indent=2))
        elif line:
            click.echo(line)


pass_context = click.make_pass_decorator(Context)


def output_folder(*, default: str, help: str):
    """The -o/--output option: the folder to write to."""
    folder = click.Path(file_okay=False, path_type=Path)
    return click.option("-o", "--output", "folder", default=default, type=folder, help=help)


def add_get_command(
    group: click.Group, *, fetch: Callable[[Client, str], File | Job], id_name: str, help: str
) -> None:
    """`GROUP get ID`: show the object `fetch` finds, in full."""

    @group.command("get", help=help)
    @click.argument("object_id", metavar=id_name)
    @pass_context
    def get(context: Context, object_id: str) -> None:
        found = fetch(context.client, object_id)
        context.show(found, json.dumps(found.raw, indent=2))


@click.group(help=__doc__)
@click.option(
    "--url", envvar="DISTILL_URL", help="the service (default: $DISTILL_URL, else http://127.0.0.1:8000)"
)
@click.option(
    "--api-key", envvar="DISTILL_API_KEY", help="sent as a Bearer token (default: $DISTILL_API_KEY)"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def main(ctx: click.Context, url: str | None, api_key: str | None, as_json: bool) -> None:
    ctx.obj = Context(url, api_key, as_json)


# --- files -------------------------------------------------------------------------------------


@main.group()
def files() -> None:
    """Upload, list, show and delete files."""


@files.command("upload")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--purpose", required=True, type=click.Choice(["teacher", "dataset", "tokenizer"]))
@pass_context
def files_upload(context: Context, path: Path, purpose: str) -> None:
    """Upload PATH; a pickled PyTorch state dict (.pt, .pth) is converted to safetensors here first. A
    teacher may be the folder a transformers model's save_pretrained wrote: it is zipped here (the files
    from_pretrained reads; pickled weights converted to safetensors) and uploaded as an hf teacher."""
    uploaded = upload(context, path, purpose)
    context.show(uploaded, f"{uploaded.id}  {uploaded.format}  {uploaded.bytes} bytes  {uploaded.filename}")


@files.command("list")
@click.option("--purpose", type=click.Choice(["teacher", "dataset", "tokenizer"]))
@pass_context
def files_list(context: Context, purpose: str | None) -> None:
    """List the files (newest first)."""
    found = list(context.client.list_files(purpose))
    context.show(
        found, "\n".join(f"{f.id}  {f.purpose:<9} {f.format:<11} {f.bytes:>12}  {f.filename}" for f in found)
    )


add_get_command(files, fetch=Client.get_file, id_name="FILE_ID", help="Show a file.")


@files.command("delete")
@click.argument("file_id")
@pass_context
def files_delete(context: Context, file_id: str) -> None:
    """Delete a file (refused while a job uses it)."""
    context.client.delete_file(file_id)
    context.show({"id": file_id, "deleted": True}, f"deleted {file_id}")


# --- jobs --------------------------------------------------------------------------------------


@main.group()
def jobs() -> None:
    """Create, show, list, cancel and wait for jobs; their events and metrics."""


@jobs.command("create")
@click.option(
    "-f",
    "--file",
    "job_file",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="JSON or YAML: the body of POST /v1/jobs, where a file may be named by its local path",
)
@click.option("--wait", "wait_for_it", is_flag=True, help="wait for the job to end; exit by how it ended")
@click.option("--timeout", type=float, help="seconds to wait (with --wait)")
@pass_context
def jobs_create(context: Context, job_file: Path, wait_for_it: bool, timeout: float | None) -> None:
    """Submit the job FILE (JSON or YAML) holds, uploading the files it names by path; with --wait, wait
    and exit by how it ended."""
    job = submit(context, job_file)
    context.show(job, job.id)
    if wait_for_it:
        finish(context, wait(context, job, timeout))


add_get_command(
    jobs, fetch=Client.get_job, id_name="JOB_ID", help="Show a job: status, progress, metrics, error."
)


@jobs.command("list")
@click.option("--status", help="only jobs in this status")
@pass_context
def jobs_list(context: Context, status: str | None) -> None:
    """List the jobs (newest first)."""
    found = list(context.client.list_jobs(status))
    context.show(found, "\n".join(f"{j.id}  {j.status:<10} {j.name or ''}" for j in found))


@jobs.command("cancel")
@click.argument("job_id")
@pass_context
def jobs_cancel(context: Context, job_id: str) -> None:
    """Cancel a job."""
    job = context.client.cancel_job(job_id)
    context.show(job, f"{job.id} {job.status}")


@jobs.command("wait")
@click.argument("job_id")
@click.option("--timeout", type=float, help="seconds to wait")
@pass_context
def jobs_wait(context: Context, job_id: str, timeout: float | None) -> None:
    """Wait for the job to end, showing its progress; exit by how it ended."""
    finish(context, wait(context, context.client.get_job(job_id), timeout))


@jobs.command("events")
@click.argument("job_id")
@click.option("--follow", is_flag=True, help="keep showing events as they happen, until the job ends")
@pass_context
def jobs_events(context: Context, job_id: str, follow: bool) -> None:
    """Show a job's events; --follow them until it ends."""
    client = context.client
    for event in client.follow_events(job_id) if follow else client.list_events(job_id):
        context.show(vars(event), f"{event.level:<7} {event.message}")


@jobs.command("metrics")
@click.argument("job_id")
@click.option("--name", help="one series: loss, soft_loss, hard_loss, validation_accuracy, ...")
@pass_context
def jobs_metrics(context: Context, job_id: str, name: str | None) -> None:
    """Show a job's per-epoch series."""
    points = context.client.metrics(job_id, name)
    if context.as_json:
        click.echo(json.dumps([vars(p) for p in points], indent=2))
    else:
        click.echo("\n".join(f"epoch {p.epoch}  step {p.step}  {p.name} {p.value:.6g}" for p in points))


# --- artifacts ---------------------------------------------------------------------------------


@main.group()
def artifacts() -> None:
    """Download a job's artifacts."""


@artifacts.command("download")
@click.argument("job_id")
@click.argument("names", nargs=-1)
@output_folder(default=".", help="the folder to write them to")
@pass_context
def artifacts_download(context: Context, job_id: str, names: tuple[str, ...], folder: Path) -> None:
    """Download the job's artifacts NAMES (default: all), each checked against its sha256; student.hf.zip
    is also unpacked into the folder student.hf, which transformers' from_pretrained loads, and
    student.lora.zip into student.lora, which peft's PeftModel.from_pretrained loads."""
    for path in download(context.client, job_id, names, folder):
        context.show({"path": str(path)}, str(path))


# --- run ---------------------------------------------------------------------------------------


@main.command("run")
@click.argument("job_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_folder(default="distilled", help="where the artifacts go")
@click.option("--timeout", type=float, help="seconds to wait for the job")
@pass_context
def run(context: Context, job_file: Path, folder: Path, timeout: float | None) -> None:
    """Upload the files JOB_FILE names by path, submit it, wait, check its gates, download its artifacts."""
    job = submit(context, job_file)
    if not context.as_json:
        click.echo(f"submitted {job.id}", err=True)
    job = wait(context, job, timeout)
    if job.status == "succeeded":
        download(context.client, job.id, (), folder)
    finish(context, job)


# --- shared steps ------------------------------------------------------------------------------


def submit(context: Context, job_file: Path) -> Job:
    """Submit the job the file holds, once the local files it names by path are uploaded."""
    body = read_job_file(job_file)
    files = local_files(body, job_file.parent)
    uploaded = {field: upload(context, path, purpose).id for field, path, purpose in files}
    return context.client.create_job(with_file_ids(body, uploaded.__getitem__))


def upload(context: Context, path: Path, purpose: str) -> File:
    """Upload the file or model folder at `path`, made safetensors here where it is pickled; on a terminal
    with a bar of the bytes sent."""
    client = context.client
    with UploadProgress(path.name, quiet=context.as_json) as progress:
        if path.is_dir():
            if purpose != "teacher":
                raise DistillError(
                    f"{path} is a folder: only a teacher may be one (the folder a transformers model's "
                    f"save_pretrained wrote); upload the {purpose} as one file"
                )
            return client.upload_model_folder(path, on_progress=progress, on_converted=say_converted)
        if path.suffix not in PICKLED:
            return client.upload_file(path, purpose, on_progress=progress)
        with as_safetensors(path) as converted:
            return client.upload_file(converted, purpose, on_progress=progress)


def say_converted(pickled: list[str], converted: list[str]) -> None:
    names = f"{', '.join(pickled)} to {', '.join(converted)}"
    click.echo(f"converted {names} here: the service takes no pickled weights", err=True)


def download(client: Client, job_id: str, names: tuple[str, ...], folder: Path) -> list[Path]:
    """The artifacts downloaded into `folder`, and the folders among them unpacked beside their zips: the
    student's transformers folder from `student.hf.zip`, a LoRA student's adapter from `student.lora.zip`."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = names or [artifact.name for artifact in client.list_artifacts(job_id)]
    paths = [client.download_artifact(job_id, name, folder / name) for name in wanted]
    for name in wanted:
        if marker := FOLDER_ARTIFACTS.get(name):
            paths.append(unpack_model_folder(folder / name, folder / Path(name).stem, marker=marker))
    return paths


def wait(context: Context, job: Job, timeout: float | None) -> Job:
    with Progress(context.client, job.id, quiet=context.as_json) as progress:
        return context.client.wait(job.id, timeout=timeout, on_event=progress.event)


def finish(context: Context, job: Job) -> None:
    """Say how the job ended and exit with its code."""
    code, line = outcome(job)
    context.show(job, "")
    if not context.as_json:
        click.echo(line, err=code != Exit.SUCCEEDED)
    sys.exit(code)


def outcome(job: Job) -> tuple[Exit, str]:
    failed_gates = [gate for gate in (job.metrics or {}).get("gates") or [] if not gate["passed"]]
    if job.status == "succeeded" and failed_gates:
        failures = "; ".join(
            f"{g['metric']} {g['value']} is not {g['op']} {g['threshold']}" for g in failed_gates
        )
        return Exit.GATE_FAILED, f"{job.id} succeeded but failed its gates: {failures}"
    if job.status == "succeeded":
        return Exit.SUCCEEDED, f"{job.id} succeeded"
    if job.status == "cancelled":
        return Exit.CANCELLED, f"{job.id} was cancelled"
    return Exit.FAILED, f"{job.id} failed ({job.error['code']}): {job.error['message']}"


def run_cli(argv: list[str] | None = None, *, commands: click.Group = main) -> None:
    """The entry point: the exit codes of the module's docstring, whatever goes wrong. `commands`: the
    client's, or a group that holds them beside others (the service's `distill`)."""
    try:
        commands.main(args=argv, prog_name="distill", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: click's own message
        exc.show()
        sys.exit(Exit.REFUSED)
    except click.Abort:
        sys.exit(Exit.REFUSED)
    except WaitTimeout as exc:
        click.echo(f"distill: {exc}", err=True)
        sys.exit(Exit.TIMED_OUT)
    except APIError as exc:
        field = f" ({exc.param})" if exc.param else ""
        click.echo(f"distill: refused: {exc.status} {exc.code}{field}: {exc.message}", err=True)
        sys.exit(Exit.REFUSED)
    except DistillError as exc:
        click.echo(f"distill: {exc}", err=True)
        sys.exit(Exit.REFUSED)
