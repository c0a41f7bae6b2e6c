"""Pure core: Debezium change event -> booking events -> cache keys. No I/O, no broker."""
