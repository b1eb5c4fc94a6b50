"""Runtime plumbing the services share: not contracts, but the one way each service opens a
Cassandra session (:mod:`schemas.runtime.cassandra`) or a Spark session and reads or writes a
Cassandra table through the connector (:mod:`schemas.runtime.spark`). See ``schemas/README.md``."""
