"""Operating: the admin HTTP port, the gRPC health service, the query API."""
