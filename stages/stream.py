"""Stage `stream`: what the pretraining stream of ``data.pretrain_root`` will read, recorded without
decoding or copying an image: ``data/stream/manifest.json`` = the SHA-256 of the sorted list of
relative paths with their sizes and modification times, the file count and the total bytes.

DVC cannot hash a folder outside the repository cheaply, so this stage is ``always_changed`` (a
walk with one stat per file) and the manifest is the pretrain stage's dependency: DVC re-runs
pretraining exactly when the manifest changes (a file added, removed, replaced or edited). With
``data.pretrain_root: ''`` (the default) it records an empty manifest and pretraining reads the
prepared labelled set as before."""

import argparse
from pathlib import Path
from typing import Any

import yaml

from jem.errors import run_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", type=Path, default=Path("data/stream/manifest.json"))
    args = ap.parse_args()
    raw = yaml.safe_load(Path(args.params).read_text()) or {}
    root = str((raw.get("data") or {}).get("pretrain_root", "") or "")  # its type was checked by validate
    from jem.data.stream import stream_manifest
    from jem.io import write_json

    manifest: dict[str, Any] = (stream_manifest(root) if root else
                                {"root": "", "files": 0, "bytes": 0, "list_sha256": ""})
    write_json(args.out, manifest)
    if root:
        mb = float(manifest["bytes"]) / 1e6
        print(f"stream: {manifest['files']} image files, {mb:.1f} MB under {manifest['root']}")


if __name__ == "__main__":
    run_main(main)
