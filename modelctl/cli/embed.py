"""``modelctl embed``: texts and images in, embeddings out (JSON lines, JSON, or .npy)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelctl.cli import output
from modelctl.cli.params import DeviceOpt, JsonOpt, ModelArg, local_model_name
from modelctl.cli.state import get_state
from modelctl.errors import ModelctlError

if TYPE_CHECKING:
    from modelctl.client import Client

# One input: what the output echoes (the text, or the image's path) and how to send it.
Item = tuple[str, Callable[[], str]]


def _text(value: str) -> Callable[[], str]:
    return lambda: value


def _image(path: Path) -> Callable[[], str]:
    def read() -> str:
        from modelctl.client import image_data_uri

        try:
            return image_data_uri(path)
        except OSError as exc:
            raise ModelctlError(f"cannot read {path}: {exc.strerror}") from exc
    return read


def _stdin_lines() -> list[str]:
    if sys.stdin.isatty():
        raise typer.BadParameter(
            "give TEXT arguments, --image FILE, or pipe lines on stdin", param_hint="TEXT")
    return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]


def collect_inputs(texts: list[str] | None, images: list[Path] | None) -> list[Item]:
    """Texts from the arguments (``-`` reads stdin there), or stdin when there are none."""
    items: list[Item] = []
    if not texts and not images:
        texts = ["-"]
    for text in texts or ():
        lines = _stdin_lines() if text == "-" else [text]
        items.extend((line, _text(line)) for line in lines)
    for path in images or ():
        if not path.is_file():
            raise typer.BadParameter(f"no such file: {path}", param_hint="--image")
        items.append((str(path), _image(path)))
    if not items:
        raise typer.BadParameter("there is nothing to embed (stdin had no lines)",
                                 param_hint="TEXT")
    return items


def _batches(client: Client, name: str, items: list[Item], batch_size: int,
             **options: Any) -> Iterator[tuple[int, list[list[float]]]]:
    """(start index, vectors) per batch, with a progress bar on a terminal for big inputs."""
    starts = range(0, len(items), batch_size)

    def run(start: int) -> list[list[float]]:
        chunk = [send() for _, send in items[start:start + batch_size]]
        return client.embed(name, chunk, **options)

    if len(starts) < 2 or not output.stderr_is_tty():
        for start in starts:
            yield start, run(start)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(),
                  console=output.console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"embedding with {name}", total=len(items))
        for start in starts:
            vectors = run(start)
            progress.advance(task, len(vectors))
            yield start, vectors


def embed(
    ctx: typer.Context,
    name: ModelArg,
    texts: Annotated[list[str] | None, typer.Argument(
        metavar="TEXT",
        help="Texts to embed; none or `-`: one text per non-blank line of stdin.")] = None,
    images: Annotated[list[Path] | None, typer.Option(
        "--image", metavar="FILE", help="An image file to embed (CLIP models); repeatable.")
    ] = None,
    device: DeviceOpt = None,
    normalize: Annotated[bool | None, typer.Option(
        "--normalize/--no-normalize",
        help="Scale each embedding to unit length [default: yes, as Marqo].")] = None,
    query: Annotated[bool, typer.Option(
        "--query", help="Texts are search queries: put the model's query prefix before each "
        "(e5's `query: `, bge's instruction).")] = False,
    document: Annotated[bool, typer.Option(
        "--document", help="Texts are documents: put the model's document prefix before "
        "each (e5's `passage: `).")] = False,
    out: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE.npy",
        help="Write a float32 matrix (one row per input) instead of JSON lines.")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, max=2048, metavar="N", help="Inputs per request.")] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Embed texts and images (starting the daemon if none runs).

    Prints one JSON line per input, {"index", "input", "embedding"}, as the batches come
    back; --json prints them as one JSON list instead, --output writes a .npy matrix.
    """
    if out is not None and not out.parent.is_dir():
        raise typer.BadParameter(f"no such directory: {out.parent}", param_hint="--output")
    if query and document:
        raise typer.BadParameter("give --query or --document, not both", param_hint="--query")
    items = collect_inputs(texts, images)
    name = local_model_name(name)
    client = get_state(ctx).started_client()
    options: dict[str, Any] = {"device": device, "normalize": normalize,
                               "input_type": "query" if query else
                               "document" if document else None}
    if out is not None:
        _to_npy(client, name, items, batch_size, out, as_json, options)
        return
    records: list[dict[str, Any]] = []
    for start, vectors in _batches(client, name, items, batch_size, **options):
        for offset, vector in enumerate(vectors):
            record = {"index": start + offset, "input": items[start + offset][0],
                      "embedding": vector}
            if as_json:
                records.append(record)
            else:
                sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()
    if as_json:
        output.print_json(records, indent=None)  # a vector per line would be thousands


def _to_npy(client: Client, name: str, items: list[Item], batch_size: int, out: Path,
            as_json: bool, options: dict[str, Any]) -> None:
    import numpy as np  # only here: no other command pays for numpy

    matrix: Any = None
    for start, vectors in _batches(client, name, items, batch_size, **options):
        if matrix is None:
            matrix = np.empty((len(items), len(vectors[0]) if vectors else 0), np.float32)
        matrix[start:start + len(vectors)] = vectors
    try:
        with open(out, "wb") as f:
            np.save(f, matrix)
    except OSError as exc:
        raise ModelctlError(f"cannot write {out}: {exc.strerror}") from exc
    rows, dims = matrix.shape
    if as_json:
        output.print_json({"output": str(out), "model": name, "rows": rows,
                           "dimensions": dims, "dtype": "float32"})
    else:
        output.hint(f"wrote {rows} embeddings x {dims} dimensions (float32) to {out}")
