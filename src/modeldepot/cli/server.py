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
    port: Annotated[int, typer.Option(help="Port of the web page")] = 9090,
    home: Annotated[Path | None, typer.Option(help="Data folder (default: a fresh temporary one)")] = None,
) -> None:
    """Try everything offline: a local fake hub with tiny models, and the web page pointed at it."""
    from modeldepot.api.demo import run_demo

    run_demo(host="127.0.0.1", port=port, home=home)


@app.command("fakehub")
def fakehub(
    root: Annotated[Path, typer.Option("--root", help="Folder of repos and files to serve (see docs)")],
    port: Annotated[int, typer.Option(help="Port")] = 8765,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
) -> None:
    """Serve a folder the way Hugging Face, Civitai and plain file hosts do (for tests and demos)."""
    from modeldepot.testing.fakehub import serve as run

    console.print(f"fakehub serving {root} at http://{host}:{port}", highlight=False)
    run(root, host=host, port=port)


@app.command("load")
def load(
    key_or_name: Annotated[str, typer.Argument(help="Model key or unique name")],
    submodel: Annotated[str | None, typer.Option(help="Part of a pipeline: unet, vae, text_encoder...")] = None,
    home: HomeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Load a model as a smoke test and print what came back (class, dtype, parameters, bytes, time)."""
    from modeldepot.cli.models import _resolve

    with open_manager(home) as mm:
        config = _resolve(mm, key_or_name)
        started = time.perf_counter()
        loaded = mm.load_model_by_config(config, submodel)
        elapsed = time.perf_counter() - started
        info = describe(loaded.model)
        info.update({"key": config.key, "name": config.name, "submodel": submodel})
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
        tensors = [v for v in model.values() if hasattr(v, "numel")]
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
