"""`stylize train johnson|adain|sanet`: train a feed-forward stylizer, locally or on a Ray cluster.

The checkpoint written to ``--output`` loads with ``stylize image --stylizer NAME --weights URI``
and as ``weights:`` in a batch job config.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from pipeline.errors import JobError

app = typer.Typer(help="Train feed-forward stylizers (johnson, adain, sanet, cyclegan).", no_args_is_help=True)

ContentManifest = Annotated[
    str, typer.Option("--content-manifest", help="Content images: a Parquet manifest or a text file of URIs.")
]
Output = Annotated[str, typer.Option(help="Folder or URI prefix for checkpoints, samples and losses.")]
Steps = Annotated[int | None, typer.Option(min=1, help="Total training steps (default: the paper's).")]
BatchSize = Annotated[int | None, typer.Option(min=1, help="Images per step per worker.")]
Lr = Annotated[float | None, typer.Option(help="Adam learning rate.")]
ImageSize = Annotated[int, typer.Option(min=16, help="Random crop side in pixels.")]
ResizeTo = Annotated[int | None, typer.Option(min=16, help="Shorter side before cropping (default per family).")]
Seed = Annotated[int, typer.Option(help="Random seed.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
Precision = Annotated[str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, bf16 or fp16.")]
EncoderWeights = Annotated[
    str, typer.Option(help="Loss/encoder VGG: auto, torchvision-vgg19, torchvision-vgg16, hed-vgg16 or a path.")
]
InitFrom = Annotated[
    str | None,
    typer.Option(
        help="Start from the matching weights of this checkpoint (e.g. an adain decoder for sanet); "
        "ignored when --output already has a checkpoint to resume."
    ),
]
CheckpointEvery = Annotated[int, typer.Option(min=1, help="Write a checkpoint every N steps.")]
LogEvery = Annotated[int, typer.Option(min=1, help="Print losses every N steps when the output is not a terminal.")]
Workers = Annotated[int, typer.Option(min=0, help="Ray Train workers (data parallel); 0 runs in this process.")]
CpusPerWorker = Annotated[
    int | None, typer.Option(min=1, help="CPUs (and torch threads) per worker; default: the node's CPUs / workers.")
]
ContentWeight = Annotated[float | None, typer.Option(help="Content loss weight.")]
StyleWeight = Annotated[float | None, typer.Option(help="Style loss weight.")]
Submit = Annotated[bool, typer.Option("--submit", help="Submit as a Ray job instead of running here.")]
Address = Annotated[str | None, typer.Option(help="Ray dashboard address for --submit, http://HEAD:8265.")]
Wait = Annotated[bool, typer.Option(help="With --submit: wait for the job to finish.")]


def _launch(data: dict, *, submit: bool, address: str | None, wait: bool) -> None:
    from pipeline.train.config import TrainConfig

    config = TrainConfig(**{k: v for k, v in data.items() if v is not None}).resolved()
    if submit:
        from pipeline import submit as jobs

        job_id, new = jobs.submit(config, kind="train", address=address)
        typer.echo(f"{'submitted' if new else 'already submitted'} {job_id}; follow with: stylize logs {job_id}")
        if wait:
            state = jobs.wait(job_id, address)
            typer.echo(f"{job_id}: {state}")
            if state != "SUCCEEDED":
                raise JobError(f"training job {job_id} ended {state}")
        return
    from pipeline.train.launch import run
    from pipeline.train.progress import losses_text, progress_for

    started = time.monotonic()
    summary = run(config, progress=progress_for(config.stylizer, config.steps or 0, every=config.log_every))
    if summary.get("skipped_content") or summary.get("skipped_style"):
        typer.echo(
            f"skipped bad rows: {summary.get('skipped_content', 0)} content, {summary.get('skipped_style', 0)} style",
            err=True,
        )
    losses = {k: v for k, v in (summary.get("losses") or {}).items() if k not in ("lr", "seconds")}
    took = time.monotonic() - started
    where = summary.get("checkpoint", "")
    typer.echo(f"trained {config.stylizer} to step {summary.get('step')} in {took:.0f}s: {where}")
    if losses:
        typer.echo(f"last losses: {losses_text(losses)}")


@app.command()
def johnson(
    style: Annotated[str, typer.Option(help="The one style image this network learns.")],
    content_manifest: ContentManifest,
    output: Output,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = 256,
    resize_to: ResizeTo = None,
    style_size: Annotated[int | None, typer.Option(help="Style image shorter side (default: --resize-to).")] = None,
    content_layers: Annotated[str | None, typer.Option(help="Comma-separated, e.g. relu2_2 or relu3_3.")] = None,
    style_layers: Annotated[str | None, typer.Option(help="Comma-separated VGG layers for the Gram loss.")] = None,
    content_weight: ContentWeight = None,
    style_weight: StyleWeight = None,
    tv_weight: Annotated[float | None, typer.Option(help="Total variation weight.")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    encoder_weights: EncoderWeights = "auto",
    init_from: InitFrom = None,
    checkpoint_every: CheckpointEvery = 1000,
    log_every: LogEvery = 50,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = None,
    submit: Submit = False,
    address: Address = None,
    wait: Wait = False,
) -> None:
    """Johnson et al. perceptual-loss training: one TransformerNet for one style image."""
    data = dict(locals())
    for key in ("content_layers", "style_layers"):
        data[key] = [s.strip() for s in data[key].split(",") if s.strip()] if data[key] else None
    _launch(_config_fields(data, "johnson"), submit=submit, address=address, wait=wait)


@app.command()
def adain(
    content_manifest: ContentManifest,
    style_manifest: Annotated[str, typer.Option(help="Style images: a Parquet manifest or a text file of URIs.")],
    output: Output,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = 256,
    resize_to: ResizeTo = None,
    content_weight: ContentWeight = None,
    style_weight: StyleWeight = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    encoder_weights: EncoderWeights = "auto",
    init_from: InitFrom = None,
    checkpoint_every: CheckpointEvery = 1000,
    log_every: LogEvery = 50,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = None,
    submit: Submit = False,
    address: Address = None,
    wait: Wait = False,
) -> None:
    """AdaIN decoder training (Huang & Belongie 2017) on content and style manifests."""
    _launch(_config_fields(dict(locals()), "adain"), submit=submit, address=address, wait=wait)


@app.command()
def sanet(
    content_manifest: ContentManifest,
    style_manifest: Annotated[str, typer.Option(help="Style images: a Parquet manifest or a text file of URIs.")],
    output: Output,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: Lr = None,
    image_size: ImageSize = 256,
    resize_to: ResizeTo = None,
    content_weight: ContentWeight = None,
    style_weight: StyleWeight = None,
    identity1_weight: Annotated[float | None, typer.Option(help="Pixel identity loss weight (paper: 1).")] = None,
    identity2_weight: Annotated[float | None, typer.Option(help="Feature identity loss weight (paper: 50).")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    encoder_weights: EncoderWeights = "auto",
    init_from: InitFrom = None,
    checkpoint_every: CheckpointEvery = 1000,
    log_every: LogEvery = 50,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = None,
    submit: Submit = False,
    address: Address = None,
    wait: Wait = False,
) -> None:
    """SANet training (Park & Lee 2019): style-attention modules + decoder with identity losses."""
    _launch(_config_fields(dict(locals()), "sanet"), submit=submit, address=address, wait=wait)


@app.command()
def cyclegan(
    content_manifest: ContentManifest,
    style_manifest: Annotated[
        str, typer.Option(help="The painting collection (domain B): a Parquet manifest or a text file of URIs.")
    ],
    output: Output,
    steps: Steps = None,
    batch_size: BatchSize = None,
    lr: Annotated[float | None, typer.Option(help="Adam lr (paper: 2e-4): constant, then linear decay.")] = None,
    image_size: ImageSize = 256,
    resize_to: ResizeTo = None,
    cycle_weight: Annotated[float | None, typer.Option(help="Cycle-consistency weight lambda (paper: 10).")] = None,
    identity_weight: Annotated[float | None, typer.Option(help="Identity loss / lambda (paper: 0.5).")] = None,
    ngf: Annotated[int | None, typer.Option(min=1, help="Generator and discriminator width (paper: 64).")] = None,
    n_blocks: Annotated[int | None, typer.Option(min=0, help="Residual blocks per generator (paper: 9).")] = None,
    seed: Seed = 0,
    device: Device = "auto",
    precision: Precision = "auto",
    checkpoint_every: CheckpointEvery = 1000,
    log_every: LogEvery = 50,
    workers: Workers = 1,
    cpus_per_worker: CpusPerWorker = None,
    submit: Submit = False,
    address: Address = None,
    wait: Wait = False,
) -> None:
    """Unpaired CycleGAN training (Zhu et al. 2017): photos -> the style of a painting collection."""
    _launch(_config_fields(dict(locals()), "cyclegan"), submit=submit, address=address, wait=wait)


@app.command("export")
def export_command(
    checkpoint: Annotated[str, typer.Argument(help="A `stylize train cyclegan` checkpoint (.safetensors).")],
    out: Annotated[str, typer.Option("--out", "-o", help="The .pth to write, e.g. latest_net_G_A.pth.")],
    generator: Annotated[str, typer.Option(help="A: content -> style (the stylizer), B: style -> content.")] = "A",
) -> None:
    """Write one CycleGAN generator in pytorch-CycleGAN-and-pix2pix's own layout (a plain state dict .pth)."""
    import io

    import torch

    from pipeline.storage import Storage
    from pipeline.train.cyclegan import export_generator

    state = export_generator(checkpoint, generator)
    buf = io.BytesIO()
    torch.save(state, buf)
    folder, _, name = out.rpartition("/")
    written = Storage(folder or ".").put(name, buf.getvalue())
    typer.echo(f"wrote {written} ({len(state)} tensors, G_{generator})")


def _config_fields(data: dict, stylizer: str) -> dict:
    data = {k: v for k, v in data.items() if k not in ("submit", "address", "wait")}
    return {"stylizer": stylizer, **data}
