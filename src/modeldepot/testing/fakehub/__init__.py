"""A local fake of huggingface.co, civitai.com and plain download hosts, with fault injection.

    from modeldepot.testing.fakehub import FakeHub, Faults

    with FakeHub() as hub:                      # 127.0.0.1, any free port; hub.url is both endpoints
        sha = hub.add_hf_repo("org/model", {"unet/w.safetensors": weights, "config.json": b"{}"})
        hub.add_hf_repo("org/model", {...}, revision="fp16")       # another branch
        hub.add_civitai_model({"id": 1, "name": "L", "type": "LORA", "modelVersions": [...]})
        url = hub.add_file("files/big.bin", data, content_disposition="big.bin")
        hub.faults("/files/*", drop_after_bytes=1000, times=1)     # or Faults(...) as 2nd argument
        ...
        hub.stats.requests, hub.stats.bytes_sent_by_path, hub.stats.max_concurrent_connections

Routes: Hugging Face ``/api/models/{repo}[/revision/{rev}]`` (``?blobs=true``), ``/api/models/{repo}/tree/
{rev}[/{path}]`` (``?recursive=true``; pages of ``hub.hf.tree_page_size`` with ``Link: rel="next"``),
``/api/models/{repo}/refs``, ``/{repo}/resolve/{rev}/{path}`` (LFS files: 302 to ``/cdn/<sha256>?...``,
signed, valid ``hub.hf.cdn_url_ttl`` s; ``hub.hf.redirect_lfs = False`` serves them directly);
Civitai ``/api/v1/models[/{id}]``, ``/api/v1/model-versions/{id}``, ``/api/v1/model-versions/by-hash/{h}``,
``/api/download/models/{versionId}[?type=&format=&size=&fp=]`` (307 to ``/civitai-cdn/<key>/<name>?X-Amz-...``);
plain files at the path given to ``add_file``. ``FakeHub(cdn_host="localhost")`` puts both CDNs on a
different origin, so clients treat them as foreign hosts. ``serve(root)`` serves a folder layout
(see ``_layout``) until interrupted.
"""

from ._faults import Faults
from ._server import FakeHub, serve
from ._stats import RequestRecord, Stats

__all__ = ["FakeHub", "Faults", "RequestRecord", "Stats", "serve"]
