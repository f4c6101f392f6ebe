"""`python -m grpcproxy start ...` runs the gRPC proxy (as `quorum grpc-proxy start ...`)."""

import sys

from grpcproxy.main import main

sys.exit(main())
