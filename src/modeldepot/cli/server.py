"""Server-side commands: serve, demo, fakehub, load, cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from modeldepot.cli._app import HomeOption, JsonOption, app, console, open_manager

cache_app = typer.Typer(help="The model cache of a running server.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default 127.0.0.1; others need an API key)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 9090)")] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="MODELDEPOT_API_KEY", help="Require this key on every request")
    ] = None,
    allow_root: Annotated[
        list[Path] | None, typer.Option("--allow-root", help="Extra folder clients may name (scan, identify, install)")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Start the REST API and the web page (http://127.0.0.1:9090 by default)."""
    from modeldepot.api.serve import serve as run
    from modeldepot.config import DepotConfig

    config = DepotConfig.load(**({"home": home} if home else {}))
    run(
        host=host or config.host,
        port=port if port is not None else config.port,
        home=config.home,
        api_key=api_key,
        allowed_roots=allow_root or (),
    )


@app.command("demo")
def demo(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the web page")] = 9090,
    hub_port: Annotated[
        int, typer.Option("--hub-port", min=0, max=65535, help="Port of the fake hub (default 0: any free port)")
    ] = 0,
    home: Annotated[Path | None, typer.Option(help="Data folder (default: a fresh temporary one)")] = None,
) -> None:
    """Try everything offline: a local fake hub with tiny models, and the web page pointed at it.

    Prints (and saves in the demo home's modeldepot.yaml) the settings that point the CLI at the
    demo hub, e.g. for `modeldepot install` from another terminal.
    """
    from modeldepot.api.demo import run_demo

    run_demo(host="127.0.0.1", port=port, home=home, hub_port=hub_port)


@app.command("fakehub")
def fakehub(
    root: Annotated[Path, typer.Option("--root", help="Folder of repos and files to serve (see docs)")],
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
) -> None:
    """Serve a folder the way Hugging Face, Civitai and plain file hosts do (for tests and demos)."""
    import errno

    from modeldepot.errors import ConfigurationError
    from modeldepot.testing.fakehub import serve as run

    try:
        run(root, host=host, port=port)  # prints where it serves once it listens
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise ConfigurationError(f"fakehub cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


@app.command("load")
def load(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
    submodel: Annotated[str | None, typer.Option(help="Part of a pipeline: unet, vae, text_encoder...")] = None,
    partial: Annotated[
        bool, typer.Option("--partial", help="Accept missing or extra weights (missing ones stay random)")
    ] = False,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a model as a smoke test and print what came back (class, dtype, parameters, bytes, time).

    Loads are exact: a file lacking weights of the model, or holding others, is an error naming them.
    """
    from modeldepot.cli.models import _resolve
    from modeldepot.load.base import parse_submodel

    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        # Parsed here, against the record, so a wrong name lists the model's own submodels.
        sub = parse_submodel(submodel, config)
        started = time.perf_counter()
        loaded = mm.load.load_model(config, sub, partial=partial)
        elapsed = time.perf_counter() - started
        info = describe(loaded.model)
        info.update({"key": config.key, "name": config.name, "submodel": submodel})
        if partial:
            info["partial"] = True
    info["seconds"] = round(elapsed, 3)
    if as_json:
        console.print_json(json.dumps(info, default=str))
    else:
        for k, v in info.items():
            console.print(f"{k}: {v}", highlight=False, markup=False)


def describe(model: object) -> dict[str, object]:
    """Class, dtype, parameter count and bytes of a loaded object (a torch module, a state dict...)."""
    info: dict[str, object] = {"class": f"{type(model).__module__}.{type(model).__qualname__}"}
    tensors: list[Any] = []
    if hasattr(model, "parameters") and callable(model.parameters):
        tensors = [*model.parameters(), *getattr(model, "buffers", list)()]
    elif isinstance(model, dict):
        # State dicts (LoRA, embeddings) and nested ones (IP-Adapter Plus: {"image_proj": {...}, ...}).
        stack: list[Any] = [model]
        while stack:
            for v in stack.pop().values():
                if isinstance(v, dict):
                    stack.append(v)
                elif hasattr(v, "numel"):
                    tensors.append(v)
    elif isinstance(getattr(model, "vocab_size", None), int):
        tokenizer: Any = model
        info["vocab_size"] = len(tokenizer) if hasattr(tokenizer, "__len__") else tokenizer.vocab_size
    if tensors:
        info["dtype"] = str(getattr(tensors[0], "dtype", "?"))
        info["parameters"] = sum(int(t.numel()) for t in tensors)
        info["bytes"] = sum(int(t.numel()) * int(t.element_size()) for t in tensors)
        info["device"] = str(getattr(tensors[0], "device", "?"))
    return info


@cache_app.command("stats")
def cache_stats(
    url: Annotated[str, typer.Option(help="Base URL of a running `modeldepot serve`")] = "http://127.0.0.1:9090",
    api_key: Annotated[str | None, typer.Option(envvar="MODELDEPOT_API_KEY", help="API key of the server")] = None,
) -> None:
    """Show hits, misses, evictions and bytes per tier of a running server's model cache."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/v2/models/stats", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        from modeldepot.errors import DownloadError

        raise DownloadError(f"cannot reach the server at {url}: {exc}", url=url) from exc
    if response.status_code != 200:
        from modeldepot.errors import ModelDepotError

        raise ModelDepotError(f"server at {url} answered {response.status_code}: {response.text[:200]}")
    console.print_json(response.text)
