"""Regenerate api_pb2.py / api_pb2.pyi from api.proto with the pinned grpcio-tools.

Run `python -m kubeedge.edgecore.edged.cri.generate` after editing api.proto and commit the output. The
include root is the `services/` folder, so the proto registers as "edgecore/edged/cri/api.proto" in the
protobuf descriptor pool: a name nothing else in the process can collide with.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]  # services/
PROTO = HERE / "api.proto"


def main() -> int:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # dev-only, untyped: imported here

    rel = PROTO.relative_to(ROOT).as_posix()
    args = ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--pyi_out={ROOT}", rel]
    rc = int(protoc.main(args))
    if rc != 0:
        print(f"protoc failed with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
