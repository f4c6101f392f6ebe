"""grpcproxy."""
